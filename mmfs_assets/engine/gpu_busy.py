"""GPU busy during a fill: NVML ``utilization.gpu`` sampled every 50 ms in a thread (nvidia-ml-py)."""

from __future__ import annotations

import threading


class GpuBusy:
    """``with GpuBusy(device) as g: ...`` then ``g.percent`` (None without CUDA or NVML)."""

    def __init__(self, device: str, every_s: float = 0.05) -> None:
        self.device = str(device)
        self.every = every_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle = None

    def __enter__(self) -> GpuBusy:
        if not self.device.startswith("cuda"):
            return self
        try:
            import pynvml

            pynvml.nvmlInit()
            index = int(self.device.split(":", 1)[1]) if ":" in self.device else 0
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception:  # noqa: BLE001 - no NVML: no number, never a failed fill
            return self
        self._thread = threading.Thread(target=self._run, name="mmfs-gpu-busy", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        import pynvml

        while not self._stop.wait(self.every):
            try:
                self.samples.append(int(pynvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
            except Exception:  # noqa: BLE001
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1)

    @property
    def percent(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None
