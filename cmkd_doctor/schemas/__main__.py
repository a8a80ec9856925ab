"""``python -m cmkd_doctor.schemas``: rewrite the shipped schema files from the builder."""

from cmkd_doctor.schemas.builder import write_all

write_all()
