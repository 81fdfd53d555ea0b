"""Render chat messages into a prompt with the model's own chat template, in the one place that does it.

The template and special tokens come from the model (its tokenizer, via Triton), or from a --chat-template file.
The Jinja environment matches Hugging Face's apply_chat_template (sandboxed, trim_blocks, lstrip_blocks,
loopcontrols, raise_exception, strftime_now, tojson), so the prompt is the one vLLM's own chat path would build.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from frontend.errors import bad_request


class TemplateRejected(Exception):
    """The template raised (e.g. a role it does not allow)."""


def _raise_exception(message: str) -> None:
    raise TemplateRejected(message)


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys=False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


@functools.lru_cache(maxsize=8)
def template_takes(template: str | None, variable: str) -> bool:
    """Whether the template reads `variable` (e.g. "tools": whether it can show the model its tools)."""
    if not template:
        return False
    env = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"])
    try:
        return variable in meta.find_undeclared_variables(env.parse(template))
    except jinja2.TemplateSyntaxError:
        return False


def render_chat(
    messages: list[dict[str, Any]],
    template: str | None,
    special_tokens: dict[str, Any],
    add_generation_prompt: bool = True,
    continue_final_message: bool = False,
    template_kwargs: dict[str, Any] | None = None,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The prompt text for `messages`; 400 when there is no template or the template rejects the messages."""
    if not template:
        raise bad_request(
            "this model has no chat template; start the frontend with --chat-template or use /v1/completions",
            param="messages",
        )
    if continue_final_message and add_generation_prompt:
        raise bad_request("continue_final_message and add_generation_prompt cannot both be true", param="messages")
    try:
        compiled = _compile(template)
    except jinja2.TemplateSyntaxError as exc:
        raise bad_request(f"the chat template does not compile: {exc}", param="chat_template") from None
    variables = {**special_tokens, **(template_kwargs or {})}
    if tools is not None:
        variables["tools"] = tools
    try:
        rendered = compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **variables)
    except TemplateRejected as exc:
        raise bad_request(f"the chat template rejected the messages: {exc}", param="messages") from None
    except (jinja2.TemplateError, TypeError, ValueError, KeyError) as exc:
        raise bad_request(f"the chat template failed on these messages: {exc}", param="messages") from None
    if continue_final_message:
        final = messages[-1].get("content") or ""
        if isinstance(final, str) and final.strip():
            index = rendered.rfind(final.strip())
            if index >= 0:
                rendered = rendered[: index + len(final.strip())]
    return rendered
