"""The files distance.py reads and writes: the image files of a folder, two folders' files paired by
relative path, and the check that an output (--out, --plot) names no input file and not the other output.
Problems are `DistanceError`s, one line for the user, naming the path and the fix."""
import os
import sys

from cli import UserError
from image_io import IMAGE_EXTENSIONS, image_files

SHOWN = 5  # file names listed in a message before "... (N more)"


class DistanceError(UserError):
    """A problem with the paths, the files or the flags, for the user to fix."""


def path_kind(path):
    """"file" or "folder"; a missing path is an error."""
    if os.path.isdir(path):
        return "folder"
    if os.path.isfile(path):
        return "file"
    raise DistanceError(f"no such file or folder: {path}")


def listing(names):
    """'a.png, b.png' or, for long lists, the first few and how many more."""
    more = f", ... ({len(names) - SHOWN} more)" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def folder_images(folder):
    """The image files under `folder` (relative paths, sorted); none is an error."""
    names = image_files(folder)
    if not names:
        raise DistanceError(f"no image files in {folder} (looked for {' '.join(IMAGE_EXTENSIONS)}, "
                            f"in subfolders too)")
    return names


def paired_names(dir0, dir1, strict=False):
    """Relative paths present in both folders; the others are reported on stderr (an error if `strict`)."""
    names0, names1 = folder_images(dir0), folder_images(dir1)
    common = sorted(set(names0) & set(names1))
    if not common:
        raise DistanceError(f"{dir0} and {dir1} have no image file in common (files are paired by their path "
                            f"relative to the folder): {dir0} has {listing(names0)}; {dir1} has {listing(names1)}")
    unpaired = [f"{len(only)} file{'s' * (len(only) > 1)} only in {folder}: {listing(only)}"
                for folder, only in ((dir0, sorted(set(names0) - set(names1))),
                                     (dir1, sorted(set(names1) - set(names0)))) if only]
    if unpaired and strict:
        raise DistanceError("; ".join(unpaired) + " (--strict: every file must have its pair)")
    for line in unpaired:
        print(f"skipped, unpaired: {line}", file=sys.stderr)
    return common


def same_file(path, other):
    """Whether `path` and `other` name one file: one resolved path (symlinks followed), or one inode."""
    if os.path.realpath(path) == os.path.realpath(other):
        return True
    try:
        return os.path.samefile(path, other)
    except OSError:  # one of them does not exist
        return False


def check_outputs(out, plot, inputs):
    """DistanceError, before any compute, if --out or --plot is a folder or one of the `inputs` (the files
    read), through links too, or if --plot is --out."""
    for flag, path in (("--out", out), ("--plot", plot)):
        if path is None:
            continue
        if os.path.isdir(path):
            raise DistanceError(f"{flag} {path} is a folder: give the path of a file to write")
        if os.path.exists(path):
            target = os.stat(path)
            clash = next((p for p in inputs if os.path.samestat(target, os.stat(p))), None)
            if clash is not None:
                raise DistanceError(f"{flag} {path} is the input file {clash}: writing would replace it; "
                                    f"write to a file that is not an input")
    if out is not None and plot is not None and same_file(out, plot):
        raise DistanceError(f"--plot {plot} is the --out file: the picture would replace the CSV; give --plot "
                            f"another file name")
