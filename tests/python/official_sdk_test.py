"""Official DingTalk Stream SDK (dingtalk-stream) against `clawdbot sim serve`.

The SDK reads DINGTALK_OPENAPI_ENDPOINT at import time, so the environment is set before
importing it. Steps: start the SDK client, wait for its connection, inject a message via the
sim admin API, let the SDK handler reply through the sessionWebhook, then assert the sim
recorded the ACK and the reply. Exit code 0 = pass.
"""
import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("--sim", required=True)
parser.add_argument("--client-id", default="dingsimclient")
parser.add_argument("--client-secret", default="sim-client-secret")
args = parser.parse_args()
os.environ["DINGTALK_OPENAPI_ENDPOINT"] = args.sim

import dingtalk_stream  # noqa: E402  (must follow the env override)
from dingtalk_stream import AckMessage  # noqa: E402

REPLY = "official sdk reply"


def admin(path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(args.sim + path, data=data, method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def wait(path, pred, timeout=20.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = admin(path)
        if pred(last):
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting on {path}: {last}")


class Echo(dingtalk_stream.ChatbotHandler):
    async def process(self, callback):
        incoming = dingtalk_stream.ChatbotMessage.from_dict(callback.data)
        text = incoming.text.content.strip() if incoming.text else ""
        assert text == "hello sdk", text
        self.reply_text(REPLY, incoming)
        return AckMessage.STATUS_OK, "OK"


async def main():
    client = dingtalk_stream.DingTalkStreamClient(dingtalk_stream.Credential(args.client_id, args.client_secret))
    client.register_callback_handler(dingtalk_stream.ChatbotMessage.TOPIC, Echo())
    task = asyncio.create_task(client.start())
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, wait, "/_sim/connections",
                                   lambda v: any(c["live"] for c in v["connections"]))
        inj = await loop.run_in_executor(None, admin, "/_sim/messages",
                                         {"text": "hello sdk", "conversation_type": "group",
                                          "sender_staff_id": "0423001"})
        mid = inj["messageId"]
        out = await loop.run_in_executor(None, wait, "/_sim/outbox", lambda v: len(v["entries"]) >= 1)
        entry = out["entries"][0]
        assert entry["route"] == "session_webhook", entry
        assert entry["text"] == REPLY, entry
        assert entry["conversation_id"] == inj["conversationId"], entry
        acks = await loop.run_in_executor(None, wait, "/_sim/acks",
                                          lambda v: any(a["messageId"] == mid for a in v["acks"]))
        ack = next(a for a in acks["acks"] if a["messageId"] == mid)["ack"]
        assert ack["code"] == 200, ack
        assert isinstance(ack["data"], str), ack
        print("official SDK conformance: OK")
        sys.stdout.flush()
        os._exit(0)
    except Exception as e:  # noqa: BLE001 - any failure is a test failure
        print(f"official SDK conformance FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)
    finally:
        task.cancel()


# The SDK's start() swallows CancelledError and reconnects forever, so the loop cannot be
# wound down cleanly: leave with os._exit once the verdict is known.
try:
    asyncio.run(asyncio.wait_for(main(), 45))
except Exception as e:  # noqa: BLE001 - any failure is a test failure
    print(f"official SDK conformance FAILED: {type(e).__name__}: {e}", file=sys.stderr)
    sys.stderr.flush()
    os._exit(1)
sys.stdout.flush()
os._exit(0)
