"""Emulated aarch64 verification of the arm bundle (qemu user mode + a Debian arm64 chroot)."""
