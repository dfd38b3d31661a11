"""Benchmark: one 2AFC batch through our metric, the lpips package and the bare backbone.

For each network, a batch of B (ref, p0, p1) triplets is timed as the minimum over
several runs after warm-up, in one process:

  1. floor   the bare torchvision trunk on the batch's 3*B images
  2. ours-1  official LPIPS with our metric: features once per image, the ref shared
  3. ours-10 all ten baseline configurations from that same single pass
  4. lpips   the lpips package doing the same 2AFC work (two calls, as its scorer does)
  5. seed    one full pass per configuration, as the seed repository did (ten metrics,
             each called on (ref, p0) and (ref, p1))

and the ratios 2/1, 4/2, 3/2, 5/3. Weights are random unless the ImageNet files are
cached; lpips gets our backbone weights, so its distances must equal ours (shown as
the largest relative difference).

    python bench.py                      # alex, B=50, 64x64, CPU
    python bench.py --net alex squeeze vgg --size 256 --device cuda --json
    python bench.py --end-to-end 100     # + experiment.py's evaluation, all ten vs one configuration
"""
import argparse
import json
import os
import tempfile
import time
import warnings

import torch

from experiment import ALL_CONFIGS, PAIRS, DistanceMetric, bapps_sets, batch_distances, evaluate, make_loader
from loss_networks import LPIPS_NETS, build_classifier, canonical_net, checkpoint_path
from tests.bapps_fake import make_bapps


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", nargs="+", default=["alex"], type=canonical_net, choices=LPIPS_NETS,
                        help="networks the lpips package has: alex, squeeze, vgg")
    parser.add_argument("--batch", type=int, default=50, help="triplets per batch")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs (the minimum is reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    parser.add_argument("--end-to-end", type=int, metavar="N", default=0,
                        help="also time the BAPPS evaluation of experiment.py (all ten configurations vs "
                             "spatial with channel norm) on a generated BAPPS tree of N examples per subsplit")
    parser.add_argument("--num-workers", type=int, default=2, help="DataLoader workers for --end-to-end")
    return parser.parse_args(argv)


def best_time(fn, device, repeats, warmup):
    """Minimum wall time of fn() in milliseconds; CUDA work is synchronised before each reading."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def lpips_package(net, metric, device):
    """lpips.LPIPS with the official linear weights and our backbone's weights copied in."""
    import lpips
    with warnings.catch_warnings():  # lpips builds its trunk with torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net=net, pnet_rand=True, verbose=False)
    ours = metric.net.features.state_dict()
    for name, param in model.net.named_parameters():
        _, index, rest = name.split(".", 2)
        param.data.copy_(ours[f"{index}.{rest}"])
    return model.to(device).eval()


def triplet_distances(metric, configs, ref, p0, p1):
    """2AFC distances for `configs` as the evaluation computes them, each image through the backbone once."""
    return batch_distances(dict.fromkeys(configs, metric), {"ref": ref, "p0": p0, "p1": p1}, PAIRS["2afc"])


def bench_net(net, args, device):
    """Times of the five contenders for one network, their ratios, and ours-vs-lpips agreement."""
    pretrained = os.path.isfile(checkpoint_path(net))
    generator = torch.Generator().manual_seed(0)
    ref, p0, p1 = (torch.rand(args.batch, 3, args.size, args.size, generator=generator).to(device)
                   for _ in range(3))
    trunk = build_classifier(net, pretrained).features.to(device).eval()
    official = DistanceMetric(net, lin=True, normalize="lpips", lpips_weights="official",
                              pretrained=pretrained).to(device)
    baseline = DistanceMetric(net, pretrained=pretrained).to(device)
    singles = [DistanceMetric(net, method=m, channel_norm=n, pretrained=pretrained).to(device)
               for m, n in ALL_CONFIGS]
    package = lpips_package(net, official, device)
    normalised = [torch.addcmul(baseline.offset, x, baseline.gain) for x in (ref, p0, p1)]
    contenders = {
        "floor": lambda: [trunk(x) for x in normalised],
        "ours-1": lambda: triplet_distances(official, official.configs(), ref, p0, p1),
        "ours-10": lambda: triplet_distances(baseline, ALL_CONFIGS, ref, p0, p1),
        "lpips": lambda: (package(2 * ref - 1, 2 * p0 - 1), package(2 * ref - 1, 2 * p1 - 1)),
        "seed": lambda: [(m(ref, p0), m(ref, p1)) for m in singles],
    }
    with torch.inference_mode():
        ms = {name: best_time(fn, device, args.repeats, args.warmup) for name, fn in contenders.items()}
        ours = triplet_distances(official, official.configs(), ref, p0, p1)[official.configs()[0]][0]
        theirs = package(2 * ref - 1, 2 * p0 - 1).flatten()
    agreement = ((ours - theirs).abs() / theirs.abs().clamp_min(1e-12)).max().item()
    return {"net": net, "weights": "imagenet" if pretrained else "random", "batch": args.batch,
            "size": args.size, "device": str(device), "threads": torch.get_num_threads(), "ms": ms,
            "ratios": {"ours-1/floor": ms["ours-1"] / ms["floor"], "lpips/ours-1": ms["lpips"] / ms["ours-1"],
                       "ours-10/ours-1": ms["ours-10"] / ms["ours-1"], "seed/ours-10": ms["seed"] / ms["ours-10"]},
            "max_rel_diff_vs_lpips": agreement}


def bench_end_to_end(net, args, device):
    """Seconds of experiment.py's evaluation (startup excluded) for all ten configurations vs one."""
    pretrained = os.path.isfile(checkpoint_path(net))
    metrics = {"spatial, norm on": dict.fromkeys([("spatial", True)], DistanceMetric(net, pretrained=pretrained)),
               "all ten": dict.fromkeys(ALL_CONFIGS, DistanceMetric(net, pretrained=pretrained))}
    seconds = {}
    with tempfile.TemporaryDirectory() as root:
        make_bapps(root, n_2afc=args.end_to_end, n_jnd=args.end_to_end, splits=("val", "jnd"))
        sets = bapps_sets(root, download=False)
        for name, configs in metrics.items():
            next(iter(configs.values())).to(device)
            start = time.perf_counter()
            for dataset, subsplit, data in sets:
                evaluate(configs, make_loader(data, args.batch, args.num_workers, device), dataset, device,
                         desc=f"{net} {name} {dataset}/{subsplit}")
            seconds[name] = time.perf_counter() - start
    examples = sum(len(data) for *_, data in sets)
    return {"net": net, "examples": examples, "seconds": seconds,
            "ratio": seconds["all ten"] / seconds["spatial, norm on"]}


def markdown(rows):
    """The results as a markdown table."""
    names = list(rows[0]["ms"])
    ratios = list(rows[0]["ratios"])
    lines = ["| net | B | size | device | " + " | ".join(f"{n} ms" for n in names) + " | "
             + " | ".join(ratios) + " | max rel diff vs lpips |",
             "|" + "---|" * (5 + len(names) + len(ratios))]
    for r in rows:
        lines.append(f"| {r['net']} | {r['batch']} | {r['size']} | {r['device']} | "
                     + " | ".join(f"{r['ms'][n]:.1f}" for n in names) + " | "
                     + " | ".join(f"{r['ratios'][k]:.2f}" for k in ratios) + f" | {r['max_rel_diff_vs_lpips']:.1e} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    nets = [canonical_net(net) for net in args.net]
    rows = [bench_net(net, args, device) for net in nets]
    end_to_end = [bench_end_to_end(net, args, device) for net in nets] if args.end_to_end else []
    if args.json:
        print(json.dumps({"batch": rows, "end_to_end": end_to_end}, indent=2))
        return
    print(markdown(rows))
    for row in end_to_end:
        print(f"\nend to end, {row['net']}, {row['examples']} BAPPS examples: "
              + ", ".join(f"{name} {s:.1f} s" for name, s in row["seconds"].items())
              + f"; ratio {row['ratio']:.2f}")


if __name__ == "__main__":
    main()
