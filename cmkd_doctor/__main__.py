from cmkd_doctor.cli import run

run()
