"""Chat sessions: a persona/system prompt, the history, and trimming to the context.

"No training" mode: a persona prompt plus a few example exchanges in the user's style,
served by a base instruct model (see `Persona`).

Example: `balabol chat --persona persona.json`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from balabol.errors import ConfigError
from balabol.prompt import validate_messages
from runtime.base import GenerationConfig

Message = dict[str, str]


@dataclass(frozen=True)
class Persona:
    """A system prompt and example exchanges that show the model how to answer."""

    system: str | None = None
    examples: tuple[tuple[str, str], ...] = ()

    def messages(self) -> list[Message]:
        out = []
        for user, assistant in self.examples:
            out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return out

    @classmethod
    def load(cls, path: Path) -> Persona:
        """JSON: {"system": "...", "examples": [["user says", "you answer"], ...]}."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
            examples = tuple((str(u), str(a)) for u, a in raw.get("examples", []))
            return cls(system=raw.get("system"), examples=examples)
        except (OSError, json.JSONDecodeError, ValueError, TypeError, AttributeError) as e:
            raise ConfigError(
                f"persona file {path}: {e}. Expected JSON like "
                '{"system": "You are Masha...", "examples": [["hi", "hey!"]]}'
            ) from e


def fit(
    backend, messages: Sequence[Message], *, max_new_tokens: int, keep_first: int = 0
) -> list[Message]:
    """Drop the oldest turns (after the first `keep_first` messages: system and examples)
    until the prompt plus max_new_tokens fits the backend's context."""
    msgs = validate_messages(messages)
    budget = backend.context_length - max_new_tokens
    while len(backend.encode_chat(msgs)) > budget:
        droppable = len(msgs) - keep_first - 1  # never drop the newest message
        if droppable <= 0:
            raise ConfigError(
                f"the message is too long for the model's context ({backend.context_length} "
                f"tokens with {max_new_tokens} for the reply); shorten it or lower max_new_tokens"
            )
        # drop a whole exchange when possible, so the history never starts with an answer
        n = 2 if droppable >= 2 and msgs[keep_first]["role"] == "user" else 1
        del msgs[keep_first : keep_first + n]
    return msgs


@dataclass
class ChatSession:
    backend: object
    persona: Persona = field(default_factory=Persona)
    history: list[Message] = field(default_factory=list)

    def reset(self) -> None:
        self.history.clear()

    def set_system(self, system: str | None) -> None:
        self.persona = Persona(system=system, examples=self.persona.examples)

    def _prefix(self) -> list[Message]:
        sys = [{"role": "system", "content": self.persona.system}] if self.persona.system else []
        return sys + self.persona.messages()

    def send(
        self,
        text: str,
        config: GenerationConfig = GenerationConfig(),
        *,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Stream the reply to `text`; the exchange joins the history when it ends."""
        prefix = self._prefix()
        msgs = fit(
            self.backend,
            [*prefix, *self.history, {"role": "user", "content": text}],
            max_new_tokens=config.max_new_tokens,
            keep_first=len(prefix),
        )
        reply = []
        for piece in self.backend.stream(msgs, config, cancel=cancel):
            reply.append(piece)
            yield piece
        # the history keeps what fitted (oldest turns trimmed) plus this exchange
        self.history[:] = [*msgs[len(prefix) :], {"role": "assistant", "content": "".join(reply)}]
