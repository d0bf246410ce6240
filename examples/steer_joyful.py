"""Call a running vsteer server with the openai SDK at three steering scales."""

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="none")

for scale in (-1.0, 0.0, 1.0):
    response = client.chat.completions.create(
        model="SmolLM2-135M-Instruct",
        messages=[{"role": "user", "content": "Describe your morning."}],
        max_tokens=48,
        temperature=0,
        extra_body={"control": {"steer": [{"vector": "joyful", "scale": scale}]}},
    )
    print(f"scale {scale:+.1f}: {response.choices[0].message.content!r}")
    print(f"           control: {response.model_extra['control']}")
