"""Image files streamed in batches for the command line: decoded ahead of use (by a thread, or by worker
processes), grouped by image size, batches sized by their own images so that memory stays flat.

`image_batches(items, ...)` yields, for tuples of paths (a pair, or one image), batches of their
loaded images stacked by position, one group per image size, with the items that cannot be
compared (unreadable files, sizes that differ within a tuple) reported beside them, so that a
caller decides whether to stop or skip. Without a fixed batch size, each batch takes items in order
while their images fit PIXELS_PER_IMAGE_BATCH pixels at each position of the tuples (50 images of
64x64; at least one item, at most MAX_BATCH), read from each file's header (or --size), so that a
small first image does not make a batch of large ones.
"""
import os
import queue
import threading

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from image_io import ImageLoadError, load_image

MAX_BATCH = 50
JOIN_TIMEOUT = 10  # seconds an interrupted run waits for the batch being decoded
PIXELS_PER_IMAGE_BATCH = MAX_BATCH * 64 * 64  # the evaluation's batch of 64x64 images; larger images, fewer


def size_mismatch(paths, shapes):
    """The error text for images of different sizes, with both sizes (width x height) and the fix."""
    sizes = ", ".join(f"{path} is {shape[-1]}x{shape[-2]}" for path, shape in zip(paths, shapes))
    return (f"images of different sizes: {sizes}; pass --size N to resize every image to N x N "
            f"(the loader's antialiased bicubic resize)")


class ImageTuples(Dataset):
    """Item i: (i, [image of each file of items[i]], None), or (i, None, message) when they cannot be compared."""

    def __init__(self, items, size=None):
        self.items, self.size = items, size

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        paths = self.items[index]
        try:
            images = [load_image(path, self.size) for path in paths]
        except ImageLoadError as err:
            return index, None, str(err)
        if len({image.shape for image in images}) > 1:
            return index, None, size_mismatch(paths, [image.shape for image in images])
        return index, images, None


def collate_by_size(batch):
    """(groups, errors) of a batch of `ImageTuples` items: groups [(indices, [stacked images per position])],
    one per image size, so that folders of mixed sizes still batch; errors [(index, message)]."""
    groups, errors = {}, []
    for index, images, error in batch:
        if error is not None:
            errors.append((index, error))
            continue
        indices, stacks = groups.setdefault(images[0].shape, ([], [[] for _ in images]))
        indices.append(index)
        for stack, image in zip(stacks, images):
            stack.append(image)
    return [(indices, [torch.stack(stack) for stack in stacks]) for indices, stacks in groups.values()], errors


def prefetched(batches, depth=2):
    """Iterate `batches` in a background thread, up to `depth` ahead: PIL and torch release the GIL,
    so decoding the next batch overlaps the network's work on this one."""
    ready, stop, end = queue.Queue(depth), threading.Event(), object()

    def put(item):
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for batch in batches:
                if not put((batch, None)):
                    return
            put((end, None))
        except Exception as err:  # handed to the consumer, which raises it
            put((None, err))

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        while True:
            batch, error = ready.get()
            if error is not None:
                raise error
            if batch is end:
                return
            yield batch
    finally:
        stop.set()
        # wait for the batch being decoded: a thread still inside torch when the interpreter exits (Ctrl-C,
        # SIGTERM) aborts the process ("terminate called without an active exception") instead of exit 130
        producer.join(timeout=JOIN_TIMEOUT)


def image_batches(items, size, batch_size=None, num_workers=None, device=torch.device("cpu"), scale=1):
    """`collate_by_size` batches of the files of `items` (tuples of paths), decoded ahead of use: `batch_size`
    items each, or (None) as many as `pixel_batches` fits in `scale` times the pixel budget; `num_workers`
    decoding processes (None: `auto_workers`)."""
    batches = (pixel_batches(items, size, scale * PIXELS_PER_IMAGE_BATCH, scale * MAX_BATCH) if batch_size is None
               else [list(range(start, min(start + batch_size, len(items))))
                     for start in range(0, len(items), batch_size)])
    num_workers = auto_workers(len(batches), device) if num_workers is None else num_workers
    loader = DataLoader(ImageTuples(items, size), batch_sampler=batches, num_workers=num_workers,
                        collate_fn=collate_by_size, pin_memory=device.type == "cuda")
    return loader if num_workers or len(loader) < 2 else prefetched(loader)


def image_pixels(path, size=None):
    """Width x height of the image at `path`, from its header (`size` x `size` when resized); 0 for a file
    PIL cannot open (loading it names the problem later)."""
    if size is not None:
        return size * size
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # PIL reports bad files many ways
        return 0
    return width * height


def pixel_batches(items, size=None, budget=PIXELS_PER_IMAGE_BATCH, most=MAX_BATCH):
    """The indices of `items` (tuples of paths) in order, cut into batches whose images hold at most `budget`
    pixels at each position of the tuples (at least one item per batch, at most `most`)."""
    batches, batch, pixels = [], [], 0
    for index, paths in enumerate(items):
        needed = max(image_pixels(path, size) for path in paths)
        if batch and (pixels + needed > budget or len(batch) == most):
            batches.append(batch)
            batch, pixels = [], 0
        batch.append(index)
        pixels += needed
    return batches + [batch] if batch else batches


def batch_for(pixels):
    """Items of `pixels` pixels each that fit the budget: the evaluation's 50 at 64x64, fewer for larger."""
    return max(1, min(MAX_BATCH, PIXELS_PER_IMAGE_BATCH // max(1, pixels)))


def auto_workers(batches, device):
    """Decoding processes: none on the CPU (the decoding thread overlaps compute; processes would take
    cores from torch's threads) or for a short job (starting them costs more than they save)."""
    if device.type == "cpu" or batches < 8:
        return 0
    return min(4, max(1, (os.cpu_count() or 2) // 2))
