"""`python -m lib_ext.app [--host 127.0.0.1] [--port 7860] [--smoke]`: the standalone app, or one headless image."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

# Before gradio is imported: no usage statistics and no version check over the network.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
# Before torch is imported: OpenMP threads that spin while waiting make the tiny model 20-40x slower whenever
# another process holds a core (measured here: 2.4 s → 66-92 s per image on 2 busy cores); passive waiting doesn't.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m lib_ext.app", description="PromptScope standalone app (toy model)")
    ap.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    ap.add_argument("--port", type=int, default=7860)
    ap.add_argument("--weights", default=None, help="toy-world .safetensors (default: the shipped weights)")
    ap.add_argument("--outdir", default="outputs", help="where --smoke and --save put images")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--save", action="store_true", help="save every generated image (PNG with infotext) to --outdir")
    ap.add_argument("--data-dir", default=None, help="seed-bandit data folder (default outputs/promptscope-bandit)")
    ap.add_argument("--smoke", action="store_true", help="generate one image headless, save it, and exit")
    ap.add_argument("--prompt", default="a red circle and a blue square", help="prompt for --smoke")
    ap.add_argument("--seed", type=int, default=1, help="seed for --smoke")
    ap.add_argument("--steps", type=int, default=20, help="steps for --smoke")
    return ap.parse_args(argv)


def smoke(args: argparse.Namespace) -> int:
    from ..toyworld.host import BEST_CFG, BEST_SAMPLER, ToyHost

    host = ToyHost.load(args.weights, outdir=args.outdir)
    t0 = time.perf_counter()
    processed = host.txt2img(
        args.prompt, seed=args.seed, steps=args.steps, cfg_scale=BEST_CFG, sampler_name=BEST_SAMPLER
    )
    seconds = time.perf_counter() - t0
    path = host.save(processed.images[0], processed.info, processed.seeds[0], Path(args.outdir))
    print(processed.info)
    print(f"saved {path} ({seconds:.1f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.smoke:
        return smoke(args)

    from ..toyworld.host import ToyHost
    from .ui import build_app

    host = ToyHost.load(args.weights, outdir=args.outdir if args.save else None)
    demo = build_app(host, data_dir=args.data_dir)
    demo.queue()
    app, _local, _share = demo.launch(
        server_name=args.host, server_port=args.port, share=False, inbrowser=False, show_api=False,
        prevent_thread_lock=True,
    )  # fmt: skip
    for hook in getattr(demo, "promptscope_app_hooks", []):  # e.g. HTTP routes, as A1111's on_app_started
        hook(demo, app)
    print(f"PromptScope app on http://{args.host}:{args.port}/ (model {host.model_name})", flush=True)
    previous = signal.signal(signal.SIGTERM, _terminate)  # `kill`: stop as on Ctrl+C (threads joined)
    try:
        demo.block_thread()  # returns on Ctrl+C (it closes the server)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for hook in getattr(demo, "promptscope_close_hooks", []):
            try:
                hook()
            except Exception:
                logging.getLogger("promptscope").exception("PromptScope: closing failed")
        if getattr(demo, "server", None) is not None:
            demo.server.close()
    return 0


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
