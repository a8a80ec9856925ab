"""Teachers from a ranking (Sec. 5.1 (4), Sec. 5.4, App. B.4): the channel masks and the
teacher file (``masks``), derivation from a ``rank`` run (``derivation``), the user's
whole networks masked at the ranked layer (``whole_networks``), the programs' batching
(``programs``), a ``.pt2`` read as data with no code run from it (``archives``) and
middle-layer features to rank (``extraction``).
"""
