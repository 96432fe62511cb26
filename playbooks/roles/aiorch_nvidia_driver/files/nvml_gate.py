"""GPU readiness gate: NVML must see the expected GPUs on the expected driver.

Prints one JSON line, {"ok": bool, "message": str, ...}, and exits 1 when the
host is not ready, with a message that says what NVML saw and what was wanted.
"""

import json
import sys


def main():
    expected, version = int(sys.argv[1]), sys.argv[2]
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError, or the library itself missing
        return report(False, f"NVML could not start: {exc} (driver not installed or not loaded?)")
    try:
        count = pynvml.nvmlDeviceGetCount()
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        names = []
        for i in range(count):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
            names.append(name.decode() if isinstance(name, bytes) else name)
    finally:
        pynvml.nvmlShutdown()
    if count != expected:
        return report(False, f"NVML sees {count} GPU(s), expected {expected}", count, driver, names)
    if version and driver != version:
        return report(False, f"driver {driver} is loaded, expected {version}", count, driver, names)
    return report(True, f"{count} GPU(s) on driver {driver}", count, driver, names)


def report(ok, message, count=0, driver="", names=()):
    print(json.dumps({"ok": ok, "message": message, "count": count, "driver": driver, "names": list(names)}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
