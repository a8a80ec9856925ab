"""Files in and out: the user's arrays and labels (``inputs``, behind the one guard of
``files``), rows streamed from disk (``streaming``), the seeded split (``splits``), atomic
writes (``outputs``) and the run directory that owns every path and provenance stamp
(``rundir``).
"""
