"""Benchmark: one 2AFC batch through our metric, the lpips package and the bare backbone.

For each network, a batch of B (ref, p0, p1) triplets is timed as the minimum over
several runs after warm-up, in one process, the contenders taking turns within each run:

  1. floor   the bare torchvision trunk, up to the last extraction point, on the batch's 3*B images
  2. ours-1  official LPIPS with our metric: features once per image, the ref shared
  3. ours-10 all ten baseline configurations from that same single pass
  4. lpips   the lpips package doing the same 2AFC work (two calls, as its scorer does)
  5. seed    one full pass per configuration, as the seed repository did (ten metrics,
             each called on (ref, p0) and (ref, p1))

and the ratios 2/1, 4/2, 3/2, 5/3. Weights are random unless the ImageNet files are
cached; lpips gets our backbone weights, so its distances must equal ours (shown as
the largest relative difference).

`--pixel N` also times the pixel metrics (l2, ssim in Lab and RGB) on N generated 2AFC
triplets: ours as the evaluation computes them (batches of B, each reference once)
against LPIPS's own `lpips.L2` / `lpips.DSSIM`, one pair at a time as its scorer runs
them (they accept batch size 1 only), with the largest relative difference again; each
side is timed --pixel-repeats times, alternating, and its minimum reported.

    python bench.py                      # alex, B=50, 64x64, CPU
    python bench.py --net alex squeeze vgg --size 256 --device cuda --json
    python bench.py --end-to-end 100     # + experiment.py's evaluation, all ten vs one configuration
    python bench.py --shift 100          # + the 2AFC evaluation with --shift 1 2 3 vs without
    python bench.py --pixel 1000         # + L2 and DSSIM on 1,000 triplets, ours vs lpips's batch-size-1 path
    python bench.py --folder 600 --vgg512 16   # + distance.py (see below)

--folder N times distance.py on two folders of N pairs of 64x64 PNGs with the official
LPIPS configuration (alex), startup excluded, against the lpips package used as its
lpips_2dirs.py uses it (each file read as RGB with PIL, lpips.im2tensor, one forward per
pair, a text line per pair), the best of three runs each. Beside it: decoding the 2N files
alone and the metric alone on the decoded batches; a pipeline that overlaps the two
takes less than their sum. Then `python distance.py A B` against an lpips_2imgs.py
equivalent, each a fresh process, wall time and peak memory, best of three (alternating).
--vgg512 N times N pairs of 512x512 PNGs with vgg (official LPIPS) per pair, and the peak
memory of a `python distance.py DIR0 DIR1` process over them (the peak RSS; on CUDA the
peak allocated GPU memory too). Without cached ImageNet weights these sections write
random weights to a temporary TORCH_HOME: the times are the same.
"""
import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import skimage.measure
import torch
from PIL import Image

import distance
from cli import device_arg, non_negative_int, positive_int
from dataset_collector import write_synthetic
from evaluation import PAIRS, bapps_sets, evaluate, evaluate_net, make_loader
from image_io import load_image
from loss_networks import LPIPS_NETS, FeatureExtractor, build_classifier, canonical_net, checkpoint_path
from metric import ALL_CONFIGS, COLORSPACES, PIXEL_CONFIG, PIXEL_METRICS, DistanceMetric, batch_distances
from pixel_metrics import PixelMetric, compare_ssim
from results import run_columns
from shift_study import shifted_images

SHIFTS = (1, 2, 3)  # --shift's study, as the README runs it
FOLDER_RUNS = 3  # runs of each folder (and shift) contender and of each fresh process (the minimum is reported)
OFFICIAL = ["--variant", "lin", "--lpips-weights", "official", "--normalize", "lpips"]
LPIPS_2IMGS = """\
import sys
import lpips
import numpy as np
from PIL import Image
loss_fn = lpips.LPIPS(net="alex", version="0.1")
img0, img1 = (lpips.im2tensor(np.array(Image.open(path).convert("RGB"))) for path in sys.argv[1:3])
print("Distance: %.3f" % loss_fn.forward(img0, img1))
"""
# runs a script (argv[1]) and reports its peak memory: VmHWM is this process's own high-water mark, while
# ru_maxrss would count the benchmark's memory too, which a forked child carries until it execs
WITH_PEAK_RSS = """\
import atexit, runpy, sys
def report():
    with open("/proc/self/status") as status:
        sys.stderr.write("\\n" + next(line for line in status if line.startswith("VmHWM:")))
atexit.register(report)
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", nargs="+", default=["alex"], type=canonical_net, choices=LPIPS_NETS,
                        help="networks the lpips package has: alex, squeeze, vgg")
    parser.add_argument("--batch", type=positive_int, default=50, help="triplets per batch")
    parser.add_argument("--size", type=positive_int, default=64, help="image side in pixels")
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed runs (the minimum is reported)")
    parser.add_argument("--warmup", type=non_negative_int, default=3, help="untimed runs first")
    parser.add_argument("--device", type=device_arg, default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    parser.add_argument("--end-to-end", type=non_negative_int, metavar="N", default=0,
                        help="also time the BAPPS evaluation of experiment.py (all ten configurations vs "
                             "spatial with channel norm) on a generated BAPPS tree of N examples per subsplit")
    parser.add_argument("--shift", type=non_negative_int, metavar="N", default=0,
                        help="also time the 2AFC val evaluation with experiment.py's --shift 1 2 3 against the plain "
                             "one, on a generated tree of N triplets per subsplit, beside the backbone alone on the "
                             "images each passes")
    parser.add_argument("--num-workers", type=non_negative_int, default=2,
                        help="DataLoader workers for --end-to-end and --shift")
    parser.add_argument("--pixel", type=non_negative_int, metavar="N", default=0,
                        help="also time l2 and ssim (Lab, RGB) on N 2AFC triplets against lpips.L2 / lpips.DSSIM "
                             "one pair at a time (the README's numbers: --pixel 1000)")
    parser.add_argument("--pixel-repeats", type=positive_int, default=3,
                        help="timed runs of each side for --pixel, alternating (the minimum is reported)")
    parser.add_argument("--folder", type=non_negative_int, metavar="N", default=0,
                        help="also time distance.py on two folders of N pairs of 64x64 PNGs against the lpips "
                             "package's lpips_2dirs.py loop, and its two-file startup against lpips_2imgs.py")
    parser.add_argument("--vgg512", type=non_negative_int, metavar="N", default=0,
                        help="also time distance.py on N pairs of 512x512 PNGs with vgg: per pair, peak memory")
    return parser.parse_args(argv)


def best_times(contenders, device, repeats, warmup):
    """{name: minimum wall time in milliseconds} of each of `contenders` ({name: fn}), timed in turn within
    each repeat, so that a machine's drift (threads waking, another process) reaches all of them alike;
    CUDA work is synchronised before each reading."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    times = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * min(seconds) for name, seconds in times.items()}


def best_time(fn, device, repeats, warmup):
    """Minimum wall time of fn() in milliseconds (`best_times` of one contender)."""
    return best_times({"fn": fn}, device, repeats, warmup)["fn"]


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
    trunk = FeatureExtractor(net, pretrained=pretrained).features.to(device).eval()
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
        ms = best_times(contenders, device, args.repeats, args.warmup)
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
        write_synthetic(root, n_2afc=args.end_to_end, n_jnd=args.end_to_end, parts=("val", "jnd"))
        sets = bapps_sets(root, download=False)
        for name, configs in metrics.items():
            next(iter(configs.values())).to(device)
            start = time.perf_counter()
            for bapps_set in sets:
                evaluate(configs, make_loader(bapps_set.data, args.batch, args.num_workers, device),
                         bapps_set.dataset, device, desc=f"{net} {name} {bapps_set.dataset}/{bapps_set.subsplit}")
            seconds[name] = time.perf_counter() - start
    examples = sum(len(bapps_set.data) for bapps_set in sets)
    return {"net": net, "examples": examples, "seconds": seconds,
            "ratio": seconds["all ten"] / seconds["spatial, norm on"]}


def bench_shift(net, args, device):
    """Seconds of the 2AFC val evaluation (`evaluation.evaluate_net`, startup excluded) plain and with --shift 1 2 3
    (the plain scores and the study from one pass), beside the backbone alone on the images each needs."""
    pretrained = os.path.isfile(checkpoint_path(net))
    metric = DistanceMetric(net, pretrained=pretrained).to(device)
    configs = [("spatial", True, tuple(metric.net.layers))]
    studies = {"plain": (), "--shift 1 2 3": SHIFTS}
    seconds, backbone = dict.fromkeys(studies, float("inf")), {}
    with tempfile.TemporaryDirectory() as root:
        write_synthetic(root, n_2afc=args.shift, parts=("val",))
        sets = bapps_sets(root, splits=("val",), download=False)
        for run in range(FOLDER_RUNS):  # alternating, each into a fresh results file, so that nothing is reused
            for name, shifts in studies.items():
                start = time.perf_counter()
                evaluate_net(net, configs, sets, Path(root) / f"results{run}_{len(shifts)}.csv",
                             run_columns(net, weights="-"), lambda needed: dict.fromkeys(needed, metric), device,
                             args.batch, args.num_workers, shifts=shifts)
                seconds[name] = min(seconds[name], time.perf_counter() - start)
        for name, shifts in studies.items():
            backbone[name] = backbone_seconds(metric, sets, shifts, args, device)
    return {"net": net, "triplets": sum(len(s.data) for s in sets), "seconds": seconds, "backbone": backbone,
            "ratio": seconds["--shift 1 2 3"] / seconds["plain"],
            "backbone_ratio": backbone["--shift 1 2 3"] / backbone["plain"]}


def backbone_seconds(metric, sets, shifts, args, device):
    """Seconds of the backbone alone on the images a 2AFC evaluation with `shifts` passes (loaded beforehand)."""
    batches = []
    for bapps_set in sets:
        for batch in make_loader(bapps_set.data, args.batch, 0, device):
            crops = list(shifted_images(batch, [0, *shifts]).values()) if shifts else []
            batches += [x.to(device) for x in (batch["ref"], batch["p0"], batch["p1"], *crops)]
    with torch.inference_mode():
        return best_time(lambda: [metric.features(x) for x in batches], device, FOLDER_RUNS, 1) / 1000


def pixel_triplet_distances(metric, ref, p0, p1, batch):
    """[d0, d1] of a PixelMetric on 2AFC triplets, batch by batch as experiment.py's evaluation computes them."""
    configs = {PIXEL_CONFIG: metric}
    parts = [batch_distances(configs, {"ref": r, "p0": a, "p1": b}, PAIRS["2afc"])[PIXEL_CONFIG]
             for r, a, b in zip(ref.split(batch), p0.split(batch), p1.split(batch))]
    return [torch.cat(d) for d in zip(*parts)]


def lpips_triplet_distances(model, ref, p0, p1):
    """[d0, d1] of lpips.L2 or lpips.DSSIM on 2AFC triplets, one pair at a time as LPIPS's scorer calls them."""
    pairs = [(model(2 * r - 1, 2 * a - 1), model(2 * r - 1, 2 * b - 1))
             for r, a, b in zip(ref.split(1), p0.split(1), p1.split(1))]
    return [torch.cat([d.flatten() for d in ds]) for ds in zip(*pairs)]


def timed(fn):
    """(fn(), wall seconds it took)."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def bench_pixel(args):
    """Seconds for N 2AFC triplets of each pixel metric, ours (batches of B) vs lpips's models (batch size 1).

    The triplets are 8-bit images, as BAPPS's PNG files load; both sides run on the CPU.
    """
    import lpips
    if not hasattr(skimage.measure, "compare_ssim"):
        skimage.measure.compare_ssim = compare_ssim  # lpips.dssim imports this removed name
    generator = torch.Generator().manual_seed(0)
    triplet = [torch.randint(0, 256, (args.pixel, 3, args.size, args.size), generator=generator) / 255
               for _ in range(3)]
    rows = []
    for net in PIXEL_METRICS:
        for colorspace in COLORSPACES:
            model = {"l2": lpips.L2, "ssim": lpips.DSSIM}[net](use_gpu=False, colorspace=colorspace)
            contenders = {"ours": lambda: pixel_triplet_distances(PixelMetric(net, colorspace), *triplet, args.batch),
                          "lpips": lambda: lpips_triplet_distances(model, *triplet)}
            seconds, results = {name: float("inf") for name in contenders}, {}
            with torch.inference_mode():
                for _ in range(args.pixel_repeats):  # alternating, so a slow spell of the machine hits both
                    for name, run in contenders.items():
                        results[name], spent = timed(run)
                        seconds[name] = min(seconds[name], spent)
            ours, theirs = (torch.cat(results[name]) for name in contenders)
            rows.append({"net": net, "colorspace": colorspace, "triplets": args.pixel, "size": args.size,
                         "threads": torch.get_num_threads(), "seconds": seconds,
                         "lpips/ours": seconds["lpips"] / seconds["ours"],
                         "max_rel_diff_vs_lpips": ((ours - theirs).abs() / theirs.abs().clamp_min(1e-12)).max().item()})
    return rows


# ---------------------------------------------------------------- distance.py


@contextlib.contextmanager
def weights_home(nets, folder):
    """TORCH_HOME with weights for `nets`: the cached ImageNet files, else random ones written to `folder`."""
    if all(os.path.isfile(checkpoint_path(net)) for net in nets):
        yield "imagenet"
        return
    saved = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(folder)
    try:
        for net in nets:
            Path(checkpoint_path(net)).parent.mkdir(parents=True, exist_ok=True)
            torch.save(build_classifier(net, pretrained=False).state_dict(), checkpoint_path(net))
        yield "random"
    finally:
        if saved is None:
            del os.environ["TORCH_HOME"]
        else:
            os.environ["TORCH_HOME"] = saved


def write_pairs(root, count, size, seed=0):
    """Folders root/dir0, root/dir1 of `count` PNG pairs: smooth colour fields with pixel noise, like photos."""
    rng = np.random.default_rng(seed)
    for folder in ("dir0", "dir1"):
        (root / folder).mkdir(parents=True)
        for i in range(count):
            coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            coarse = Image.fromarray(coarse).resize((size, size), Image.BICUBIC)
            pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (size, size, 3))
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(root / folder / f"{i:05d}.png")
    return str(root / "dir0"), str(root / "dir1")


def lpips_2dirs(model, dir0, dir1, out, device):
    """The loop of lpips_2dirs.py (PIL instead of OpenCV, same bytes): its distances, in its file order."""
    import lpips
    distances = []
    with open(out, "w") as file, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # formatting its grad-requiring distance, as the script does
        for name in os.listdir(dir0):
            if os.path.exists(os.path.join(dir1, name)):
                img0, img1 = (lpips.im2tensor(np.array(Image.open(os.path.join(d, name)).convert("RGB"))).to(device)
                              for d in (dir0, dir1))
                dist01 = model.forward(img0, img1)
                file.writelines("%s: %.6f\n" % (name, dist01))
                distances.append((name, dist01.item()))
    return dict(distances)


def ours_2dirs(nets, dir0, dir1, out, device):
    """distance.py DIR0 DIR1 --out OUT with the network already loaded (`distance.load_metrics`): its distances
    by file name."""
    args = distance.parse_args([dir0, dir1, *OFFICIAL, "--out", str(out), "--device", str(device)])
    names = distance.paired_names(dir0, dir1)
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        distance.two_folders(args, nets, dir0, dir1, names, device)
    with open(out, newline="") as file:
        return {row["path0"]: float(row["distance"]) for row in csv.DictReader(file)}


def decode_and_compute(metrics, dir0, dir1, device, batch=50):
    """Seconds to decode every file of both folders alone, and of the metric alone on the decoded batches."""
    names = sorted(os.listdir(dir0))
    start = time.perf_counter()
    images = [[load_image(os.path.join(d, name)) for name in names] for d in (dir0, dir1)]
    decode = time.perf_counter() - start
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(names), batch):
            x0, x1 = (torch.stack(side[i: i + batch]).to(device) for side in images)
            batch_distances(metrics, {"0": x0, "1": x1}, [("0", "1")])[next(iter(metrics))][0].cpu()
    return decode, time.perf_counter() - start


def best_of(runs, fn):
    """(minimum seconds, last result) of `runs` calls of fn()."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def child_run(script, argv):
    """(wall seconds, peak RSS in MiB) of a fresh Python process running `script` with `argv` here (Linux)."""
    command = [sys.executable, "-c", WITH_PEAK_RSS, script, *map(str, argv)]
    start = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{script} {' '.join(map(str, argv))} failed:\n{done.stderr[-2000:]}")
    return seconds, int(done.stderr.split("VmHWM:")[-1].split()[0]) / 1024  # kB


def bench_folder(args, device, root):
    """distance.py vs the lpips package on N pairs of 64x64 PNGs, and the two-file startup of both."""
    dir0, dir1 = write_pairs(root, args.folder, 64)
    nets = distance.load_metrics(distance.parse_args([dir0, dir1, *OFFICIAL]), device)
    metrics = nets["alex"]
    package = lpips_package("alex", next(iter(metrics.values())), device)
    ours_s, ours = best_of(FOLDER_RUNS, lambda: ours_2dirs(nets, dir0, dir1, root / "ours.csv", device))
    theirs_s, theirs = best_of(FOLDER_RUNS, lambda: lpips_2dirs(package, dir0, dir1, root / "lpips.txt", device))
    decode_s, compute_s = decode_and_compute(metrics, dir0, dir1, device)
    agreement = max(abs(ours[name] - theirs[name]) / abs(theirs[name]) for name in theirs)
    pair = [os.path.join(dir0, "00000.png"), os.path.join(dir1, "00000.png")]
    (root / "lpips_2imgs.py").write_text(LPIPS_2IMGS)
    startup = {"distance.py": [], "lpips_2imgs.py": []}
    for _ in range(FOLDER_RUNS):
        startup["distance.py"].append(child_run("distance.py", pair))
        startup["lpips_2imgs.py"].append(child_run(str(root / "lpips_2imgs.py"), pair))
    return {"pairs": args.folder, "device": str(device), "threads": torch.get_num_threads(),
            "seconds": {"distance.py": ours_s, "lpips_2dirs.py loop": theirs_s, "decode alone": decode_s,
                        "metric alone": compute_s},
            "ms_per_pair": {"distance.py": 1000 * ours_s / args.folder,
                            "lpips_2dirs.py loop": 1000 * theirs_s / args.folder},
            "speedup": theirs_s / ours_s, "max_rel_diff_vs_lpips": agreement,
            "two_files": {name: {"seconds": min(s for s, _ in runs), "peak_rss_mib": max(m for _, m in runs)}
                          for name, runs in startup.items()}}


def bench_vgg512(args, device, root):
    """distance.py on N pairs of 512x512 PNGs with vgg: ms per pair (startup excluded) and peak memory."""
    dir0, dir1 = write_pairs(root, args.vgg512, 512)
    flags = [dir0, dir1, "--net", "vgg", *OFFICIAL, "--device", str(device)]
    nets = distance.load_metrics(distance.parse_args(flags), device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, _ = best_of(1, lambda: ours_2dirs(nets, dir0, dir1, root / "vgg.csv", device))
    result = {"pairs": args.vgg512, "device": str(device), "ms_per_pair": 1000 * seconds / args.vgg512}
    if device.type == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    result["process_seconds"], result["peak_rss_mib"] = child_run("distance.py", [*flags, "--out", root / "vgg.csv"])
    return result


def distance_report(folder, vgg512):
    """The distance.py sections as text."""
    lines = []
    if folder:
        s, ms = folder["seconds"], folder["ms_per_pair"]
        lines += [f"\ndistance.py, {folder['pairs']} pairs of 64x64 PNGs, official LPIPS (alex), {folder['device']}, "
                  f"{folder['threads']} threads, startup excluded, best of {FOLDER_RUNS}:",
                  f"  lpips_2dirs.py loop {s['lpips_2dirs.py loop']:.2f} s ({ms['lpips_2dirs.py loop']:.2f} ms/pair), "
                  f"distance.py {s['distance.py']:.2f} s ({ms['distance.py']:.2f} ms/pair): "
                  f"{folder['speedup']:.2f}x faster per pair; max rel diff {folder['max_rel_diff_vs_lpips']:.1e}",
                  f"  decode alone {s['decode alone']:.2f} s + metric alone {s['metric alone']:.2f} s = "
                  f"{s['decode alone'] + s['metric alone']:.2f} s sequentially; the pipeline {s['distance.py']:.2f} s",
                  "two files, a fresh process each, best of {}: ".format(FOLDER_RUNS) + ", ".join(
                      f"{name} {v['seconds']:.2f} s (peak RSS {v['peak_rss_mib']:.0f} MiB)"
                      for name, v in folder["two_files"].items())]
    if vgg512:
        gpu = f", peak GPU memory {vgg512['peak_gpu_mib']:.0f} MiB" if "peak_gpu_mib" in vgg512 else ""
        lines.append(f"\ndistance.py, {vgg512['pairs']} pairs of 512x512 PNGs, vgg, official LPIPS, "
                     f"{vgg512['device']}: {vgg512['ms_per_pair']:.0f} ms per pair (startup excluded){gpu}; "
                     f"the whole process {vgg512['process_seconds']:.1f} s, peak RSS {vgg512['peak_rss_mib']:.0f} MiB")
    return "\n".join(lines)


def bench_distance(args, device):
    """The --folder and --vgg512 sections (({...} or None) each), on generated PNGs in a temporary folder."""
    nets = ["alex"] * bool(args.folder) + ["vgg"] * bool(args.vgg512)
    with tempfile.TemporaryDirectory() as tmp, weights_home(nets, Path(tmp) / "torch_home") as weights:
        folder = bench_folder(args, device, Path(tmp) / "folder") if args.folder else None
        vgg512 = bench_vgg512(args, device, Path(tmp) / "vgg512") if args.vgg512 else None
    for section in (folder, vgg512):
        if section:
            section["weights"] = weights
    return folder, vgg512


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
    device = args.device
    nets = [canonical_net(net) for net in args.net]
    rows = [bench_net(net, args, device) for net in nets]
    end_to_end = [bench_end_to_end(net, args, device) for net in nets] if args.end_to_end else []
    shift = [bench_shift(net, args, device) for net in nets] if args.shift else []
    pixel = bench_pixel(args) if args.pixel else []
    folder, vgg512 = bench_distance(args, device) if args.folder or args.vgg512 else (None, None)
    if args.json:
        print(json.dumps({"batch": rows, "end_to_end": end_to_end, "shift": shift, "pixel": pixel, "folder": folder,
                          "vgg512": vgg512}, indent=2))
        return
    print(markdown(rows))
    if pixel:
        print("\n| metric | colorspace | triplets | ours s | lpips s | lpips/ours | max rel diff vs lpips |\n"
              "|---|---|---|---|---|---|---|")
    for row in pixel:
        print(f"| {row['net']} | {row['colorspace']} | {row['triplets']} | {row['seconds']['ours']:.2f} | "
              f"{row['seconds']['lpips']:.2f} | {row['lpips/ours']:.1f} | {row['max_rel_diff_vs_lpips']:.1e} |")
    for row in end_to_end:
        print(f"\nend to end, {row['net']}, {row['examples']} BAPPS examples: "
              + ", ".join(f"{name} {s:.1f} s" for name, s in row["seconds"].items())
              + f"; ratio {row['ratio']:.2f}")
    for row in shift:
        print(f"\nshift study, {row['net']}, {row['triplets']} 2AFC triplets: "
              + ", ".join(f"{name} {s:.1f} s" for name, s in row["seconds"].items())
              + f"; ratio {row['ratio']:.2f} (the backbone alone on the images each passes: "
              + ", ".join(f"{name} {s:.1f} s" for name, s in row["backbone"].items())
              + f"; ratio {row['backbone_ratio']:.2f})")
    if folder or vgg512:
        print(distance_report(folder, vgg512))


if __name__ == "__main__":
    main()
