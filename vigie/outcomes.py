"""How an alert ended: the outcomes a dispatcher or the worker picks when resolving it, and
what each means for the ONVS report (Observatoire national des violences en santé).

ONVS fact labels and gravity levels 1–4 are those of the ONVS declaration form
(SocialGouv/onvs ``levels``), see ``shared/research/french_geo.md`` §4.4.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OnvsFact:
    label: str  # the ONVS form's own wording
    level: int  # 1 (least) to 4 (most serious)
    goods: bool = False  # atteinte aux biens (else aux personnes)


@dataclass(frozen=True)
class Outcome:
    code: str
    label_fr: str
    label_en: str
    genuine: bool  # a real incident: victim support is offered, ONVS pre-fill is proposed
    facts: tuple[OnvsFact, ...] = ()


_VERBAL = OnvsFact("Injure/provocation/outrage", 1)
_THREAT = OnvsFact("Menace de mort / d'atteinte à l'intégrité physique ou aux biens", 2)
_ARMED_THREAT = OnvsFact("Menace avec arme par nature ou par destination", 4)
_PHYSICAL = OnvsFact("Violence volontaire sans arme", 3)
_ARMED = OnvsFact("Violence volontaire avec arme", 4)
_SEXUAL = OnvsFact("Agression sexuelle", 3)
_CRIME = OnvsFact("Autre fait qualifié de crime (meurtre, séquestration…)", 4)
_THEFT = OnvsFact("Vol sans effraction", 1, goods=True)
_ARMED_ROBBERY = OnvsFact("Vol à main armée", 3, goods=True)
_DAMAGE = OnvsFact("Dégradation", 1, goods=True)

OUTCOMES: tuple[Outcome, ...] = (
    Outcome("physical_assault", "Agression physique", "Physical assault", True, (_PHYSICAL,)),
    Outcome("armed_assault", "Agression avec arme", "Armed assault", True, (_ARMED,)),
    Outcome("sexual_assault", "Agression sexuelle", "Sexual assault", True, (_SEXUAL,)),
    Outcome("verbal_abuse", "Insultes, outrage", "Verbal abuse", True, (_VERBAL,)),
    Outcome("threat", "Menaces", "Threats", True, (_THREAT,)),
    Outcome("armed_threat", "Menace avec arme", "Threat with a weapon", True, (_ARMED_THREAT,)),
    Outcome("theft", "Vol", "Theft", True, (_THEFT,)),
    Outcome("armed_robbery", "Vol à main armée", "Armed robbery", True, (_ARMED_ROBBERY,)),
    Outcome("damage", "Dégradation", "Damage to property", True, (_DAMAGE,)),
    Outcome(
        "duress",
        "Contrainte (travailleur sous la menace)",
        "Duress (worker under threat)",
        True,
        (_THREAT,),
    ),
    Outcome("sequestration", "Séquestration", "Unlawful confinement", True, (_CRIME,)),
    Outcome("medical", "Malaise ou chute du professionnel", "Worker unwell or fell", False),
    Outcome("false_alarm", "Fausse alerte", "False alarm", False),
    Outcome("test", "Test", "Test", False),
    Outcome("other", "Autre (voir note)", "Other (see note)", False),
)

BY_CODE: dict[str, Outcome] = {o.code: o for o in OUTCOMES}


def get(code: str) -> Outcome:
    try:
        return BY_CODE[code]
    except KeyError:
        raise ValueError(
            f"outcome {code!r} inconnu; valeurs possibles : {', '.join(BY_CODE)}"
        ) from None
