"""The words of HURIDOCS answers, shared by the report flow (asked in the defender's words) and
the desk's pages (shown in the responder's): answer keys, their labels, and the mt4 codes of the
types of acts (FIELD.md, section c)."""

from __future__ import annotations


def N_(message: str) -> str:
    return message


ACTS = {  # key → HURIDOCS mt4 code (None: the desk codes it)
    "threat": "02010301",
    "death_threat": "02010302",
    "surveillance": "02010303",
    "assault": "020101",
    "sexual": "020102",
    "arrest": "030101",
    "disappearance": "030103",
    "raid": "040101",
    "killing": "0101",
    "censorship": "1001",
    "assembly": "1201",
    "other": None,
}
# What the report flow offers, in the defender's words: answer key -> message id.
ANSWERS = {
    "threat": N_("Threats or intimidation"),
    "death_threat": N_("A death threat"),
    "surveillance": N_("Being watched or followed"),
    "assault": N_("A physical attack"),
    "sexual": N_("Sexual violence or harassment"),
    "arrest": N_("Arrest or detention"),
    "disappearance": N_("Someone disappeared or was taken"),
    "raid": N_("A raid or search of a home or office"),
    "killing": N_("Someone was killed or nearly killed"),
    "censorship": N_("Censorship or online attacks"),
    "assembly": N_("A meeting stopped or a group banned"),
    "other": N_("Something else"),
    "police": N_("Police"),
    "military": N_("Army or military"),
    "intelligence": N_("Intelligence services"),
    "officials": N_("Government officials"),
    "armed_group": N_("An armed group"),
    "private_security": N_("Private security guards"),
    "company": N_("A company or landowner"),
    "mob": N_("A crowd or mob"),
    "known": N_("Someone with power over me (family, community, work)"),
    "unknown": N_("I don't know"),
}
# An mt4 code -> the words a defender chose it by.
ACT_LABELS = {code: ANSWERS[key] for key, code in ACTS.items() if code is not None}
