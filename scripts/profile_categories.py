#!/usr/bin/env python3
"""Sorts the samples of folded stacks (inferno-collapse-perf's output, one
`frame;frame;...;leaf COUNT` per line) into where the CPU went, and prints one markdown
table: a row per category, a column per profile (the file's name), each cell the share of
that profile's samples.

A sample counts for the first category that matches one of its frames, from the leaf
up: a copy inside protobuf encoding is a copy, a fsync inside RocksDB is a fsync.
Usage: profile_categories.py FILE.folded...
"""

import re
import sys
from collections import Counter
from pathlib import Path

# (category, pattern), the most specific first.
CATEGORIES = [
    ("fsync", r"fdatasync|\bfsync|sync_file_range|jbd2|blkdev_issue_flush|file_write_and_wait"),
    ("copies (memcpy/memmove)", r"memcpy|memmove|copy_user|copy_page|copyin|copyout"),
    ("allocation", r"malloc|\bfree\b|cfree|realloc|calloc|_int_free|_int_malloc|alloc::alloc|__rust_alloc|__rust_dealloc|sdallocx|je_"),
    ("TLS (rustls, ring)", r"rustls::|\bring::|ring_core|aes_hw|gcm_|chacha20|poly1305|sha256_block|x25519"),
    ("protobuf (prost)", r"prost::|hanse_proto::|encode_raw|merge_field|encoded_len"),
    ("gRPC and HTTP/2 (tonic, h2, hyper)", r"\bh2::|hyper::|hyper_util::|tonic::|\bhttp::|tower::|http_body"),
    ("log and command encoding (postcard, serde)", r"postcard::|serde::|hanse_storage::codec|hanse_shard::command"),
    ("RocksDB", r"rocksdb|librocksdb|_ZN7rocksdb"),
    ("openraft", r"openraft::"),
    ("actors (actix)", r"actix::|actix_rt::"),
    ("Hanse (node, consensus, storage)", r"hanse_"),
    ("kernel networking", r"tcp_|\bip_|sock_|skb|__sys_send|__sys_recv|net_rx|loopback|__netif|sendmsg|recvmsg|epoll|unix_stream"),
    ("scheduling and waking (tokio, futex)", r"tokio::|futex|__schedule|schedule\b|try_to_wake_up|parking_lot|std::thread|pthread_cond|sched_"),
    ("syscalls and other kernel", r"entry_SYSCALL|do_syscall|\[unknown\]|_raw_spin|asm_"),
]
COMPILED = [(name, re.compile(pattern)) for name, pattern in CATEGORIES]
OTHER = "other"


def categorize(stack: str) -> str:
    for frame in reversed(stack.split(";")):
        for name, pattern in COMPILED:
            if pattern.search(frame):
                return name
    return OTHER


def profile(path: Path) -> Counter:
    counts = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            counts[categorize(stack)] += int(count)
    return counts


def main(paths):
    profiles = {Path(p).name.removesuffix(".folded"): profile(Path(p)) for p in paths}
    names = list(profiles)
    print("| where | " + " | ".join(names) + " |")
    print("| --- |" + " --- |" * len(names))
    for category in [name for name, _ in CATEGORIES] + [OTHER]:
        cells = []
        for name in names:
            total = sum(profiles[name].values()) or 1
            cells.append(f"{100 * profiles[name][category] / total:.1f} %")
        print(f"| {category} | " + " | ".join(cells) + " |")
    samples = " | ".join(str(sum(profiles[n].values())) for n in names)
    print(f"| (samples) | {samples} |")


if __name__ == "__main__":
    main(sys.argv[1:])
