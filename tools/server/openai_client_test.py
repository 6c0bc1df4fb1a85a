#!/usr/bin/env python3
"""End-to-end check of `anvil serve` with the official `openai` Python client (pip install openai).

Starts `anvil serve` on a free port with tests/golden/llama3_gqa plus the tiny tokenizer and chat
template of tests/server/data/chat_model (copied into a temp folder), then checks through the
client: completions with token-id prompts against the golden greedy tokens, streaming
completions (n = 1 and n > 1), chat (whole and streamed) against HF transformers' expected text,
stop strings, n > 1, logprobs, /v1/models, and that client errors raise the SDK's typed
exceptions with the right HTTP status.

  python3 tools/server/openai_client_test.py --anvil build/bin/anvil

CTest runs it as `openai_client` (tests/CMakeLists.txt). Exit status: 0 pass, 1 fail, 77 skip
(the `openai` package is not importable). Runs in a few seconds on the CPU backend.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

SKIP = 77  # CTest's SKIP_RETURN_CODE for this test
try:
    import openai
except ImportError as e:
    print(f"SKIP: the openai package is not importable ({e}); tools/test.sh installs it into build/pyenv")
    sys.exit(SKIP)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "tests", "golden", "llama3_gqa")
CHAT = os.path.join(ROOT, "tests", "server", "data", "chat_model")
API_KEY = "test-key"
MODEL = "tiny"

ARGS = None
SERVER = {}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server():
    tmp = tempfile.mkdtemp(prefix="anvil_openai_test_")
    for f in ("config.json", "generation_config.json", "model.safetensors"):
        shutil.copy(os.path.join(GOLDEN, f), tmp)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(CHAT, f), tmp)
    port = free_port()
    env = dict(os.environ, ANVIL_CACHE=os.path.join(tmp, "cache"))
    proc = subprocess.Popen([ARGS.anvil, "serve", "--model", tmp, "--backend", "cpu", "--port", str(port),
                             "--api-key", API_KEY, "--served-model-name", MODEL],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("anvil serve exited:\n" + proc.stdout.read().decode(errors="replace"))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    break
        except Exception:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("anvil serve did not become healthy in 60 s")
    SERVER.update(proc=proc, port=port, tmp=tmp)


def stop_server():
    proc = SERVER.get("proc")
    if proc is not None:
        proc.send_signal(2)  # SIGINT: graceful stop
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        shutil.rmtree(SERVER["tmp"], ignore_errors=True)
        if proc.returncode != 0:
            raise RuntimeError(f"anvil serve exited with {proc.returncode}")


def load(path):
    with open(path) as f:
        return json.load(f)


class OpenAIClientTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.client = openai.OpenAI(base_url=f"http://127.0.0.1:{SERVER['port']}/v1", api_key=API_KEY, max_retries=0)
        cls.golden = load(os.path.join(GOLDEN, "golden.json"))
        cls.expected = load(os.path.join(CHAT, "expected.json"))

    @classmethod
    def tearDownClass(cls):
        # Idle keep-alive connections would hold the server's graceful stop for httplib's 5 s
        # keep-alive timeout.
        cls.client.close()

    def test_models(self):
        models = self.client.models.list()
        self.assertEqual([m.id for m in models.data], [MODEL])

    def test_completion_token_ids_match_golden(self):
        for prompt, greedy in zip(self.golden["prompts"], self.golden["greedy"]):
            r = self.client.completions.create(model=MODEL, prompt=prompt, max_tokens=32, temperature=0,
                                               extra_body={"ignore_eos": True, "return_token_ids": True})
            choice = r.choices[0]
            self.assertEqual(choice.model_extra["token_ids"], greedy)
            self.assertEqual(choice.finish_reason, "length")
            self.assertEqual(r.usage.prompt_tokens, len(prompt))
            self.assertEqual(r.usage.completion_tokens, 32)

    def test_completion_stream(self):
        prompt, greedy = self.golden["prompts"][1], self.golden["greedy"][1]
        stream = self.client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0, stream=True,
                                                stream_options={"include_usage": True},
                                                extra_body={"ignore_eos": True, "return_token_ids": True})
        ids, reasons, usage = [], [], None
        for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for c in chunk.choices:
                ids += c.model_extra["token_ids"]
                if c.finish_reason:
                    reasons.append(c.finish_reason)
        self.assertEqual(ids, greedy[:10])
        self.assertEqual(reasons, ["length"])
        self.assertEqual(usage.completion_tokens, 10)

    def test_chat(self):
        e = self.expected
        r = self.client.chat.completions.create(model=MODEL, messages=e["messages"], max_tokens=e["max_tokens"],
                                                temperature=0, extra_body={"ignore_eos": True})
        self.assertEqual(r.choices[0].message.role, "assistant")
        self.assertEqual(r.choices[0].message.content, e["greedy_text"])
        self.assertEqual(r.usage.prompt_tokens, len(e["prompt_ids"]))

    def test_chat_stream_and_stop(self):
        e = self.expected
        stream = self.client.chat.completions.create(model=MODEL, messages=e["messages"], max_tokens=e["max_tokens"],
                                                     temperature=0, stream=True, extra_body={"ignore_eos": True})
        text, roles, reasons = "", [], []
        for chunk in stream:
            d = chunk.choices[0].delta
            if d.role:
                roles.append(d.role)
            text += d.content or ""
            if chunk.choices[0].finish_reason:
                reasons.append(chunk.choices[0].finish_reason)
        self.assertEqual(roles, ["assistant"])
        self.assertEqual(text, e["greedy_text"])
        self.assertEqual(reasons, ["length"])
        r = self.client.chat.completions.create(model=MODEL, messages=e["messages"], max_tokens=e["max_tokens"],
                                                temperature=0, stop=[e["stop"]], extra_body={"ignore_eos": True})
        self.assertEqual(r.choices[0].message.content, e["stop_text"])
        self.assertEqual(r.choices[0].finish_reason, "stop")

    def test_completion_stream_n(self):
        prompt = self.golden["prompts"][2]
        stream = self.client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, n=3, temperature=1.0,
                                                seed=11, stream=True,
                                                extra_body={"ignore_eos": True, "return_token_ids": True})
        ids = {i: [] for i in range(3)}
        reasons = {i: [] for i in range(3)}
        for chunk in stream:
            self.assertEqual(chunk.object, "text_completion")
            for c in chunk.choices:
                self.assertEqual(reasons[c.index], [], "a chunk after the choice's finish_reason")
                ids[c.index] += c.model_extra["token_ids"]
                if c.finish_reason:
                    reasons[c.index].append(c.finish_reason)
        self.assertEqual(reasons, {i: ["length"] for i in range(3)})
        self.assertTrue(all(len(v) == 6 for v in ids.values()), ids)
        # Choice i runs with seed + i: a whole request with the same seed gives the same choices.
        r = self.client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, n=3, temperature=1.0, seed=11,
                                           extra_body={"ignore_eos": True, "return_token_ids": True})
        self.assertEqual({c.index: c.model_extra["token_ids"] for c in r.choices}, ids)

    def test_completion_text_prompt_and_stop(self):
        e = self.expected
        # The chat prompt's text as a plain completion prompt gives the same greedy text.
        r = self.client.completions.create(model=MODEL, prompt=e["rendered"], max_tokens=e["max_tokens"],
                                           temperature=0, extra_body={"ignore_eos": True, "add_special_tokens": False})
        self.assertEqual(r.choices[0].text, e["greedy_text"])
        self.assertEqual(r.usage.prompt_tokens, len(e["prompt_ids"]))
        r = self.client.completions.create(model=MODEL, prompt=e["rendered"], max_tokens=e["max_tokens"],
                                           temperature=0, stop=[e["stop"], "never-seen"],
                                           extra_body={"ignore_eos": True, "add_special_tokens": False})
        self.assertEqual(r.choices[0].text, e["stop_text"])
        self.assertEqual(r.choices[0].finish_reason, "stop")

    def test_n_and_logprobs(self):
        r = self.client.completions.create(model=MODEL, prompt=self.golden["prompts"][0], max_tokens=4, n=3,
                                           temperature=0.8, seed=5, logprobs=2)
        self.assertEqual(sorted(c.index for c in r.choices), [0, 1, 2])
        for c in r.choices:
            self.assertEqual(len(c.logprobs.tokens), 4)
            self.assertEqual(len(c.logprobs.token_logprobs), 4)
            self.assertTrue(all(lp <= 0 for lp in c.logprobs.token_logprobs))
            self.assertTrue(all(len(t) == 2 for t in c.logprobs.top_logprobs))
        # Greedy: the chosen token is the most likely one, so its logprob tops the alternatives.
        r = self.client.chat.completions.create(model=MODEL, messages=self.expected["messages"], max_tokens=3,
                                                temperature=0, logprobs=True, top_logprobs=2)
        content = r.choices[0].logprobs.content
        self.assertEqual(len(content), 3)
        for entry in content:
            self.assertEqual(len(entry.top_logprobs), 2)
            best = max(t.logprob for t in entry.top_logprobs)
            self.assertAlmostEqual(entry.logprob, best, places=4)
            self.assertLessEqual(entry.logprob, 0)

    def assert_api_error(self, exc_type, status, param, call, code=None):
        with self.assertRaises(exc_type) as cm:
            call()
        e = cm.exception
        self.assertEqual(e.status_code, status)
        self.assertIsInstance(e.body, dict)  # the SDK unwraps {"error": {...}}
        self.assertTrue(e.body["message"])
        self.assertEqual(e.body["param"], param)
        if code is not None:
            self.assertEqual(e.code, code)
        return e

    def test_errors(self):
        c, m = self.client, self.expected["messages"]
        self.assert_api_error(openai.BadRequestError, 400, "temperature",
                              lambda: c.completions.create(model=MODEL, prompt=[1, 2], max_tokens=4, temperature=5))
        self.assert_api_error(openai.BadRequestError, 400, "max_tokens",
                              lambda: c.completions.create(model=MODEL, prompt=[1, 2], max_tokens=-1))
        self.assert_api_error(openai.BadRequestError, 400, "n",
                              lambda: c.completions.create(model=MODEL, prompt=[1, 2], max_tokens=2, n=17))
        self.assert_api_error(openai.BadRequestError, 400, "prompt",
                              lambda: c.completions.create(model=MODEL, prompt=[1, 100000], max_tokens=2))
        self.assert_api_error(openai.BadRequestError, 400, "prompt",
                              lambda: c.completions.create(model=MODEL, prompt=[5] * 200, max_tokens=1),
                              code="context_length_exceeded")
        self.assert_api_error(openai.BadRequestError, 400, "messages",
                              lambda: c.chat.completions.create(model=MODEL, messages=[], max_tokens=2))
        self.assert_api_error(openai.BadRequestError, 400, "messages",
                              lambda: c.chat.completions.create(model=MODEL, max_tokens=2,
                                                                messages=[{"role": "wizard", "content": "hi"}]))
        self.assert_api_error(openai.BadRequestError, 400, "top_logprobs",
                              lambda: c.chat.completions.create(model=MODEL, messages=m, max_tokens=2,
                                                                top_logprobs=3))
        self.assert_api_error(openai.BadRequestError, 400, "response_format",
                              lambda: c.chat.completions.create(model=MODEL, messages=m, max_tokens=2,
                                                                response_format={"type": "json_object"}))
        self.assert_api_error(openai.NotFoundError, 404, "model",
                              lambda: c.completions.create(model="gpt-4o", prompt=[1], max_tokens=1),
                              code="model_not_found")
        self.assert_api_error(openai.NotFoundError, 404, None,
                              lambda: c.post("/engines/tiny/completions", cast_to=object, body={}),
                              code="not_found")
        self.assert_api_error(openai.APIStatusError, 413, None,
                              lambda: c.completions.create(model=MODEL, prompt="x" * (17 << 20), max_tokens=1))
        with openai.OpenAI(base_url=c.base_url, api_key="wrong", max_retries=0) as bad:
            self.assert_api_error(openai.AuthenticationError, 401, None, bad.models.list, code="invalid_api_key")
        # A stream refused before it starts is an ordinary error response, not an event stream.
        self.assert_api_error(openai.BadRequestError, 400, "stop",
                              lambda: c.chat.completions.create(model=MODEL, messages=m, max_tokens=2, stream=True,
                                                                stop=["x"] * 17))
        # The server is unharmed: the golden tokens still come back.
        r = c.completions.create(model=MODEL, prompt=self.golden["prompts"][2], max_tokens=32, temperature=0,
                                 extra_body={"ignore_eos": True, "return_token_ids": True})
        self.assertEqual(r.choices[0].model_extra["token_ids"], self.golden["greedy"][2])


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--anvil", default=os.path.join(ROOT, "build", "bin", "anvil"), help="path of the anvil binary")
    ARGS, rest = p.parse_known_args()
    start_server()
    try:
        result = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2).result
    finally:
        stop_server()
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
