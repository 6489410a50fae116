"""The frontend's dynamic prompts: text widgets with `dynamicPrompts` are rewritten when queued.

C-style comments are removed, and each `{a|b|c}` group is replaced by one of its options chosen at
random (groups nest; a backslash escapes the next character). This mirrors the frontend's
`processDynamicPrompt`, including its quirks, so that a prompt converted here is what the editor
would have sent. The random source is injected to keep the core deterministic under test.
"""

from __future__ import annotations

import random
import re

_COMMENTS = re.compile(r"/\*[\s\S]*?\*/|//.*")
_ESCAPED = re.compile(r"\\([{}|])")


class _Parser:
    def __init__(self, text: str, rng: random.Random) -> None:
        self.text = _COMMENTS.sub("", text)
        self.pos = 0
        self.rng = rng

    def _escape(self) -> str:
        # The frontend reads past the end here and appends "undefined"; keep its output.
        nxt = self.text[self.pos] if self.pos < len(self.text) else "undefined"
        self.pos += 1
        return "\\" + nxt

    def _choice(self) -> str:
        options: list[str] = []
        current = ""
        depth = 0
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\":
                current += self._escape()
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                if not depth:
                    break
                depth -= 1
            elif char == "|" and not depth:
                options.append(current)
                current = ""
                continue
            current += char
        options.append(current)
        chosen = options[int(self.rng.random() * len(options))]
        return process_dynamic_prompt(chosen, self.rng)

    def run(self) -> str:
        result = ""
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\":
                result += self._escape()
            elif char == "{":
                result += self._choice()
            else:
                result += char
        return _ESCAPED.sub(r"\1", result)


def process_dynamic_prompt(text: str, rng: random.Random) -> str:
    """Strip comments from `text` and resolve its `{a|b}` choices with `rng`."""
    return _Parser(text, rng).run()
