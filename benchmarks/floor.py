"""The floor of the serving benchmark: ONNX Runtime behind the smallest handler that still
answers the same JSON. No validation, no routing, no metrics, no log, no batching: what is
left is HTTP, JSON and the model itself, the least any server has to pay.

    python -m benchmarks.floor MODEL.onnx PORT

``MODEL.onnx`` is the graph the platform converts a pipeline to (its metadata names the
inputs, fill values and output). Benchmark only; never part of the product.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import orjson


def app_for(data: bytes):
    import onnx
    import onnxruntime as ort

    meta = {p.key: p.value for p in onnx.load_model_from_string(data).metadata_props}
    features = json.loads(meta["mlops.features"])
    numeric = set(json.loads(meta["mlops.numeric"]))
    fill = json.loads(meta["mlops.fill"])
    output, column = meta["mlops.output"], int(meta["mlops.output_column"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])

    def feed(records: list[dict]) -> dict:
        out = {}
        for f in features:
            values = [r.get(f) for r in records]
            if f in numeric:
                out[f] = np.array(
                    [fill[f] if v is None else v for v in values], dtype=np.float64
                ).reshape(-1, 1)
            else:
                out[f] = np.array(
                    [fill[f] if v is None else str(v) for v in values], dtype=object
                ).reshape(-1, 1)
        return out

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":  # readiness
            body = b'{"ready": true}'
        else:
            chunks = []
            while True:
                message = await receive()
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    break
            records = orjson.loads(b"".join(chunks))["records"]
            scores = np.asarray(session.run([output], feed(records))[0], dtype=np.float64)
            scores = scores[:, column] if scores.ndim == 2 else scores
            body = orjson.dumps({"probabilities": scores.tolist()})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def main(argv: list[str]) -> None:
    import uvicorn

    path, port = argv
    with open(path, "rb") as f:
        app = app_for(f.read())
    uvicorn.run(
        app, host="127.0.0.1", port=int(port), loop="uvloop", http="httptools", access_log=False
    )


if __name__ == "__main__":
    main(sys.argv[1:])
