"""LoRA adapters known to the engine, by name: declared at start-up or loaded at run time."""

from __future__ import annotations

import os
from dataclasses import dataclass


class LoraError(ValueError):
    """A LoRA request is wrong; the message says why."""


class UnknownLora(LoraError):
    """No adapter of that name."""


@dataclass
class _Adapter:
    name: str
    lora_id: int
    path: str
    in_use: int = 0
    unloading: bool = False


class LoraRegistry:
    """Name -> LoRARequest, with reference counts so unloading waits for requests that use the adapter."""

    def __init__(self, declared: dict[str, str], capacity: int) -> None:
        self._declared = dict(declared)
        self._capacity = capacity
        self._adapters: dict[str, _Adapter] = {}
        self._next_id = 1

    def names(self) -> list[str]:
        return [name for name, adapter in self._adapters.items() if not adapter.unloading]

    async def start(self, engine) -> None:
        for name, path in self._declared.items():
            await self.load(engine, name, path)

    def _lora_request(self, adapter: _Adapter):
        from vllm.lora.request import LoRARequest

        return LoRARequest(adapter.name, adapter.lora_id, adapter.path)

    def acquire(self, name: str | None):
        """LoRARequest for a request naming an adapter (None for the base model); release() when done."""
        if name is None:
            return None
        adapter = self._adapters.get(name)
        if adapter is None or adapter.unloading:
            raise UnknownLora(f"unknown LoRA adapter '{name}'")
        adapter.in_use += 1
        return self._lora_request(adapter)

    async def release(self, engine, name: str | None) -> None:
        adapter = self._adapters.get(name) if name else None
        if adapter is None:
            return
        adapter.in_use -= 1
        if adapter.unloading and adapter.in_use == 0:
            await self._remove(engine, adapter)

    async def load(self, engine, name: object, path: object) -> None:
        if not isinstance(name, str) or not name.strip():
            raise LoraError("'lora_name' must be a non-empty string")
        if not isinstance(path, str) or not path.strip():
            raise LoraError("'lora_path' must be a non-empty string")
        if self._capacity == 0:
            raise LoraError(
                "LoRA is not enabled for this model (set enable_lora or declare adapters in multi_lora.json)"
            )
        if name in self._adapters:
            raise LoraError(f"LoRA adapter '{name}' is already loaded")
        if len(self._adapters) >= self._capacity:
            raise LoraError(
                f"cannot load LoRA adapter '{name}': {self._capacity} adapters are loaded, the most this model "
                "allows (max_loras in model.json); unload one first"
            )
        if not os.path.isdir(path):
            raise LoraError(f"LoRA adapter path '{path}' is not a directory")
        adapter = _Adapter(name, self._next_id, path)
        self._next_id += 1
        try:
            await engine.add_lora(self._lora_request(adapter))
        except Exception as exc:  # noqa: BLE001 - the engine's reason goes back to the caller
            raise LoraError(f"cannot load LoRA adapter '{name}' from '{path}': {exc}") from None
        self._adapters[name] = adapter

    async def unload(self, engine, name: object) -> None:
        if not isinstance(name, str) or name not in self._adapters or self._adapters[name].unloading:
            raise UnknownLora(f"unknown LoRA adapter '{name}'")
        adapter = self._adapters[name]
        adapter.unloading = True
        if adapter.in_use == 0:
            await self._remove(engine, adapter)

    async def _remove(self, engine, adapter: _Adapter) -> None:
        self._adapters.pop(adapter.name, None)
        await engine.remove_lora(adapter.lora_id)
