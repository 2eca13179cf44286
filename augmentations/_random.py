"""Gaussian noise drawn in parallel streams on CPU."""

from __future__ import annotations

import threading

import torch
from ecg_augmentations.base import randn
from torch import Tensor

STREAM_SIZE = 1 << 20  # elements per stream


def randn_streams(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise of ``shape`` on the device and dtype of ``like``.

    torch fills a CPU tensor from one generator on one thread, which makes the
    draw the costliest step of a noise transform on a large batch. On CPU the
    tensor is therefore cut into chunks of ``STREAM_SIZE`` elements, each drawn
    from its own generator seeded from ``generator``, on up to
    ``torch.get_num_threads()`` threads. The chunks depend only on the shape, so
    the numbers are the same for any thread count. Other devices draw at once.
    """
    if like.device.type != "cpu":
        return randn(shape, like, generator)
    out = torch.empty(shape, dtype=like.dtype)
    chunks = out.view(-1).split(STREAM_SIZE)
    if len(chunks) <= 1:
        return out.normal_(generator=generator)
    seeds = torch.randint(0, 2**62, (len(chunks),), generator=generator).tolist()
    n_threads = min(len(chunks), torch.get_num_threads())

    def fill(first: int) -> None:
        for i in range(first, len(chunks), n_threads):
            chunks[i].normal_(generator=torch.Generator().manual_seed(seeds[i]))

    threads = [threading.Thread(target=fill, args=(i,)) for i in range(1, n_threads)]
    for thread in threads:
        thread.start()
    try:
        fill(0)  # the tensor ops release the GIL, so the threads run side by side
    finally:
        for thread in threads:
            thread.join()
    return out
