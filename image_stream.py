"""Image files streamed in batches for the command line: decoded ahead of use (by a thread, or by worker
processes), grouped by image size, batch sizes that keep memory flat.

`image_batches(items, ...)` yields, for tuples of paths (a pair, or one image), batches of their
loaded images stacked by position, one group per image size, with the items that cannot be
compared (unreadable files, sizes that differ within a tuple) reported beside them, so that a
caller decides whether to stop or skip.
"""
import os
import queue
import threading

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from image_io import ImageLoadError, load_image

MAX_BATCH = 50
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

    threading.Thread(target=produce, daemon=True).start()
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


def image_batches(items, size, batch_size, num_workers, device):
    """`collate_by_size` batches of the files of `items` (tuples of paths), decoded ahead of use."""
    loader = DataLoader(ImageTuples(items, size), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=collate_by_size, pin_memory=device.type == "cuda")
    return loader if num_workers or len(loader) < 2 else prefetched(loader)


def auto_batch_size(path, size=None):
    """Images per batch: the evaluation's 50 at 64x64, fewer for larger images (from `path`'s header)."""
    if size is None:
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Exception:  # PIL reports bad files many ways; loading the file names the problem later
            return MAX_BATCH
    else:
        width = height = size
    return max(1, min(MAX_BATCH, PIXELS_PER_IMAGE_BATCH // (width * height)))


def auto_workers(batches, device):
    """Decoding processes: none on the CPU (the decoding thread overlaps compute; processes would take
    cores from torch's threads) or for a short job (starting them costs more than they save)."""
    if device.type == "cpu" or batches < 8:
        return 0
    return min(4, max(1, (os.cpu_count() or 2) // 2))
