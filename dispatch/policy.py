"""Escalation policy: which contact, on which channel, when. Pure data and pure functions.

The policy's YAML shape is the ``escalation`` block of the referent directory
(``spec/operations.md``)::

    steps:
      - {after_s: 0,   contact: 1, channels: [sms]}
      - {after_s: 30,  contact: 1, channels: [voice]}
      - {after_s: 90,  contact: 2, channels: [sms, voice]}
      - {after_s: 150, contact: all, channels: [sms, voice]}
    repeat: 1
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vigie.vocabulary import Channel


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    after_s: int = Field(ge=0, description="seconds after the alert's creation")
    contact: int | Literal["all"] = Field(description="1-based position in the chain, or 'all'")
    channels: tuple[Channel, ...] = Field(min_length=1)

    @field_validator("contact")
    @classmethod
    def _positive(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError("contact must be 1 or more, or 'all'")
        return v


class EscalationPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: tuple[Step, ...] = Field(min_length=1)
    repeat: int = Field(default=1, ge=0, description="how many times the whole policy repeats")

    @field_validator("steps")
    @classmethod
    def _ordered(cls, steps: tuple[Step, ...]) -> tuple[Step, ...]:
        times = [s.after_s for s in steps]
        if times != sorted(times):
            raise ValueError("steps must be in increasing after_s order")
        return steps


DEFAULT_POLICY = EscalationPolicy(
    steps=(
        Step(after_s=0, contact=1, channels=(Channel.SMS,)),
        Step(after_s=30, contact=1, channels=(Channel.VOICE,)),
        Step(after_s=90, contact=2, channels=(Channel.SMS, Channel.VOICE)),
        Step(after_s=150, contact="all", channels=(Channel.SMS, Channel.VOICE)),
    ),
    repeat=1,
)


# --- Planning (pure): every notification of a policy, in order. Added for the engine. ------

# The pause after the last step before a new pass starts, when the policy has one step only.
SINGLE_STEP_ROUND_GAP_S = 60
# A pass never restarts sooner than this after its last step (keeps a repeat from stacking
# on top of the last step when two steps are close together).
MIN_ROUND_GAP_S = 30


def round_length_s(policy: EscalationPolicy) -> int:
    """Length of one pass of the policy: the last step plus the gap that led to it.

    The default policy (0, 30, 90, 150 s) makes passes of 150 + 60 = 210 s: the repeat starts
    at 210 s, and the escalation is exhausted (repeat 1) at 420 s.
    """
    times = [s.after_s for s in policy.steps]
    gap = times[-1] - times[-2] if len(times) > 1 else SINGLE_STEP_ROUND_GAP_S
    return times[-1] + max(gap, MIN_ROUND_GAP_S)


class PlannedStep(BaseModel):
    """One notification to plan: pass, step, 1-based contact position, channel, offset."""

    model_config = ConfigDict(frozen=True)

    round_no: int
    step_no: int
    position: int
    channel: Channel
    offset_s: int  # from the chain's start (the alert's creation for the first chains)


def plan(policy: EscalationPolicy, n_contacts: int) -> list[PlannedStep]:
    """Expand ``policy`` for a chain of ``n_contacts`` contacts (national fallback last).

    A position past the end of the chain falls to the last existing contact (the national
    fallback, which the alert server always puts last), as operations.md says.
    """
    if n_contacts < 1:
        return []
    length = round_length_s(policy)
    out: list[PlannedStep] = []
    for round_no in range(policy.repeat + 1):
        for step_no, step in enumerate(policy.steps):
            if step.contact == "all":
                positions = list(range(1, n_contacts + 1))
            else:
                positions = [min(step.contact, n_contacts)]
            for channel in step.channels:
                for position in positions:
                    out.append(
                        PlannedStep(
                            round_no=round_no,
                            step_no=step_no,
                            position=position,
                            channel=channel,
                            offset_s=round_no * length + step.after_s,
                        )
                    )
    return out


def total_length_s(policy: EscalationPolicy) -> int:
    """When the escalation is exhausted, counted from the chain's start."""
    return (policy.repeat + 1) * round_length_s(policy)
