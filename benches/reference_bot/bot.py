"""The reference bot: what a user would write instead of clawdbot.

The official DingTalk Stream SDK (`dingtalk-stream`) receives the messages; each one is
ACKed at once (the handler returns before the model is asked) and answered in its own
asyncio task: an `asyncio.Semaphore` holds the same concurrency limit as the bot under
test, an aiohttp session (one connection pool, reused) asks the OpenAI-compatible model,
and the answer goes back through the message's session webhook, as clawdbot answers.
No journal, no order per conversation, no rate limits: the least a working bot does.

Run by `cargo bench --bench pipeline` (benches/pipeline/reference.rs) against the same
simulator and fake model; by hand:
  python bot.py --sim URL --model-url URL/v1 --model NAME --limit N --client-id ID --client-secret S
It prints `ready` on stdout once the handler is registered and the stream is starting.
"""
import argparse
import asyncio
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--sim", required=True, help="the DingTalk OpenAPI endpoint (the simulator)")
parser.add_argument("--model-url", required=True, help="the model's base URL, ending in /v1")
parser.add_argument("--model", required=True)
parser.add_argument("--api-key", default="bench-key")
parser.add_argument("--limit", type=int, required=True, help="model calls in flight at most")
parser.add_argument("--client-id", required=True)
parser.add_argument("--client-secret", required=True)
args = parser.parse_args()
# The SDK reads its endpoint at import time.
os.environ["DINGTALK_OPENAPI_ENDPOINT"] = args.sim

import aiohttp  # noqa: E402
import dingtalk_stream  # noqa: E402
from dingtalk_stream import AckMessage  # noqa: E402


class Answer(dingtalk_stream.ChatbotHandler):
    def __init__(self):
        super().__init__()
        self.limit = asyncio.Semaphore(args.limit)
        self.http = None
        self.tasks = set()

    async def process(self, callback):
        message = dingtalk_stream.ChatbotMessage.from_dict(callback.data)
        task = asyncio.create_task(self.answer(message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return AckMessage.STATUS_OK, "OK"

    async def answer(self, message):
        if self.http is None:
            self.http = aiohttp.ClientSession()
        text = message.text.content.strip() if message.text else ""
        body = {"model": args.model, "messages": [{"role": "user", "content": text}]}
        headers = {"Authorization": f"Bearer {args.api_key}"}
        try:
            async with self.limit:
                async with self.http.post(f"{args.model_url}/chat/completions", json=body,
                                          headers=headers) as r:
                    doc = await r.json()
            reply = doc["choices"][0]["message"]["content"]
        except Exception as e:  # the typical bot answers something rather than nothing
            reply = f"model error: {type(e).__name__}"
        payload = {"msgtype": "text", "text": {"content": reply},
                   "at": {"atUserIds": [message.sender_staff_id]}}
        try:
            async with self.http.post(message.session_webhook, json=payload) as r:
                await r.read()
        except Exception as e:
            print(f"reply failed: {type(e).__name__}", file=sys.stderr)


async def main():
    credential = dingtalk_stream.Credential(args.client_id, args.client_secret)
    client = dingtalk_stream.DingTalkStreamClient(credential)
    client.register_callback_handler(dingtalk_stream.ChatbotMessage.TOPIC, Answer())
    print("ready", flush=True)
    await client.start()


asyncio.run(main())
