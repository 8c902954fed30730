"""Sub-commands of ``vigie`` imported only when they run.

Why: each command group pulls in its own world (SQLAlchemy and Alembic for the database ones,
shapely for ``geo``, paho and the simulator for ``sim``). Importing them all to print
``vigie --help`` or to run one light command cost seconds. Here a group is named with its help
text up front and its module is imported when the group is actually invoked (or its own help is
asked for); ``vigie --help`` lists it from the help text alone.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup


def _load(target: str, name: str, help_text: str) -> Any:
    module_name, _, attr = target.partition(":")
    sub_app = getattr(importlib.import_module(module_name), attr)
    group = typer.main.get_group(sub_app)
    group.name = name
    group.help = help_text
    return group


class LazySubcommand(TyperCommand):
    """Stands for a group in the parent's listing; becomes the real group once invoked."""

    def __init__(self, name: str, target: str, help_text: str) -> None:
        super().__init__(name=name, help=help_text, callback=None)
        self.target = target

    def make_context(
        self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any
    ) -> Any:
        # The context belongs to the real group, so Click invokes the real group with it.
        real = _load(self.target, self.name or "", self.help or "")
        return real.make_context(info_name, args, parent=parent, **extra)


class LazyGroup(TyperGroup):
    """A Typer group whose ``lazy`` sub-groups are imported on first use.

    ``lazy`` maps a sub-command name to ``("package.module:typer_app", "help text")``.
    """

    lazy: ClassVar[dict[str, tuple[str, str]]] = {}

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return names + [n for n in self.lazy if n not in names]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is None and cmd_name in self.lazy:
            target, help_text = self.lazy[cmd_name]
            cmd = LazySubcommand(cmd_name, target, help_text)
        return cmd
