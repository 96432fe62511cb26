"""The baseline for the check-in benchmark: a bare FastAPI JSON endpoint, nothing behind it."""

from fastapi import FastAPI

app = FastAPI()


@app.post("/checkin")
async def checkin(body: dict) -> dict:
    return {"revision": 0, "poll_interval_s": 30.0}
