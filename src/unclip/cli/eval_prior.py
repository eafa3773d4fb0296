"""``unclip eval prior``: a prior's sampled z_i against the true image's, next to two baselines (§2.2, issue 6).

Library: ``unclip.eval.prior_eval``. Registered in ``unclip.cli.eval.SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse

from unclip.cli import arguments

# An empty "%(default)" field: the defaults formatter then adds no "(default: None)" after "as stored".
_NO_DEFAULT = "%(default).0s"


def register_prior(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "prior",
        help="a prior's z_i vs the true image's (cosine, R@1, R@10), next to the z_t and nearest-caption baselines",
        description="Sample z_i from N held-out Shapes-world captions and score them against the true images' z_i: "
        "mean cosine, and R@1 / R@10 of retrieving the true image among the N by cosine. Baselines: z_t used as "
        "z_i, and the z_i of the nearest training caption (by z_t cosine) in a pool of training pairs.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="a pipeline folder (pipeline.json) or a prior folder (with --clip)")
    p.add_argument("--clip", help="CLIP folder, when --model is a prior folder")
    p.add_argument("--n", type=int, default=1000, help="held-out (caption, image) pairs; retrieval is among these")
    p.add_argument("--samples-per-caption", type=int, default=1, help="prior draws per caption, all scored")
    p.add_argument("--pool", type=int, default=5000, help="training pairs searched by the nearest-caption baseline")
    p.add_argument(
        "--ceiling-pool", type=int, default=0,
        help="also estimate the ceiling the captions put on the cosine, from same-claims images among this many "
        "training captions (0: skip; 200000 covers about a third of test captions)",
    )  # fmt: skip
    p.add_argument("--split", default="test", choices=("test", "val", "heldout"), help="Shapes-world split evaluated")
    p.add_argument(
        "--data", help="held-out pairs of other data instead of the Shapes world (any --data spec of training)"
    )
    p.add_argument(
        "--train-data",
        help="with --data: the training data whose first --pool pairs the nearest-caption baseline searches "
        "(without it that baseline is left out)",
    )
    p.add_argument(
        "--sampler",
        help="prior sampler: ddim, ddpm, dpmpp_2m, or mmse, the point estimate in one call (with --best-of 1; "
        "--guidance 1 for the unguided mean) (default: as stored)" + _NO_DEFAULT,
    )  # fmt: skip
    p.add_argument(
        "--no-point-estimate", dest="point_estimate", action="store_false",
        help="skip the diffusion prior's point-estimate row (one unguided call per caption at t = T)",
    )  # fmt: skip
    p.add_argument("--steps", type=int, help="prior sampling steps (default: as stored)" + _NO_DEFAULT)
    p.add_argument("--guidance", type=float, help="prior guidance scale (default: as stored)" + _NO_DEFAULT)
    p.add_argument(
        "--best-of", type=int, help="candidates per caption, best z_i . z_t kept (default: as stored)" + _NO_DEFAULT
    )
    p.add_argument(
        "--combine", choices=("best", "mean"),
        help="best: keep the candidate closest to z_t (§2.2); mean: their mean direction, a point estimate "
        "(default: as stored)" + _NO_DEFAULT,
    )  # fmt: skip
    p.add_argument("--batch-size", type=int, default=64, help="captions per prior call (timings depend on it)")
    p.add_argument("--seed", type=arguments.seed, default=0, help="seed of caption 0's first draw")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run_prior)


def run_prior(args: argparse.Namespace) -> int:
    import json

    from unclip.eval import prior_eval

    prior, clip, stored = prior_eval.load_prior_and_clip(args.model, args.clip, args.device)
    prior_eval.check_compatible(prior, clip)  # before any work
    settings = prior_eval.sampling_settings(
        prior, stored, steps=args.steps, guidance=args.guidance, best_of=args.best_of, combine=args.combine,
        sampler=args.sampler,
    )  # fmt: skip
    report = prior_eval.evaluate_prior(
        prior, clip, n=args.n, samples_per_caption=args.samples_per_caption, pool=args.pool, seed=args.seed,
        split=args.split, settings=settings, batch_size=args.batch_size, ceiling_pool=args.ceiling_pool, progress=True,
        data=args.data, train_data=args.train_data, point_estimate=args.point_estimate,
    )  # fmt: skip
    report = {"model": args.model, "clip": args.clip, **report}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    knobs = ", ".join(f"{k} {v}" for k, v in report["settings"].items())
    print(f"{report['kind']} prior ({report['parameters']:,} parameters; {knobs})")
    where = f"{report['split']} split" if args.data is None else f"{report['split']}, {report['skipped']} skipped"
    print(f"{report['n']} held-out pairs ({where}), {report['samples_per_caption']} draw(s) each")
    print(f"{'':<32}{'cosine':>8}{'R@1':>8}{'R@10':>8}")
    rows = (("prior", "prior"), ("prior point estimate (1 call)", "prior_point_estimate"),
            ("z_t as z_i", "baseline_z_t"),
            (f"nearest of {report['pool']} train captions", "baseline_nearest_caption"))  # fmt: skip
    for label, key in rows:
        r = report.get(key)
        if r is not None:  # the nearest-caption baseline needs a training pool; the point estimate a diffusion prior
            print(f"{label:<32}{r['cosine']:>8.4f}{r['r_at_1']:>8.4f}{r['r_at_10']:>8.4f}")
    print(f"{'chance':<32}{'':>8}{report['chance']['r_at_1']:>8.4f}{report['chance']['r_at_10']:>8.4f}")
    c = report.get("ceiling")
    if c is not None and c["covered"] == 0:
        print(f"ceiling: no caption's claims recur often enough in {c['pool']:,} training captions (raise it)")
    elif c is not None:
        print(f"ceiling on the {c['covered']} captions ({c['coverage']:.0%}) whose claims recur in {c['pool']:,} "
              f"training captions: perfect sampler {c['perfect_sampler']:.4f}, best prediction "
              f"{c['best_prediction']:.4f}; there the prior scores {c['cosine_on_covered']['prior']:.4f}"
              + (f" (point estimate {c['cosine_on_covered']['prior_point_estimate']:.4f})"
                 if "prior_point_estimate" in c["cosine_on_covered"] else "") + ", z_t "
              f"{c['cosine_on_covered']['baseline_z_t']:.4f}, nearest caption "
              f"{c['cosine_on_covered']['baseline_nearest_caption']:.4f}")  # fmt: skip
    print(f"sampling {report['seconds_per_embedding']:.4f} s per embedding (batch {report['batch_size']}, "
          f"{report['device']}); total {report['seconds']:.1f} s")  # fmt: skip
    return 0
