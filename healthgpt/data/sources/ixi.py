"""IXI (Imperial College London / brain-development.org): ~600 healthy-subject brain MRIs.

Official layout: one tar per sequence, each holding flat NIfTI files,

    IXI-T1.tar  ->  IXI002-Guys-0828-T1.nii.gz, ...
    IXI-T2.tar  ->  IXI002-Guys-0828-T2.nii.gz, ...
    IXI-PD.tar  ->  IXI002-Guys-0828-PD.nii.gz, ...

The reader takes the tars as downloaded (members are streamed, nothing is extracted) or the
extracted files anywhere under the root, or both. Item = one volume. Records = one kind
"image" per kept slice (see `healthgpt.data.decode.nifti` for the slicing rules); T2 and PD of a
subject share their geometry, so the mixture can pair them for T2<->PD synthesis, and
super-resolution/reconstruction tasks are derived from single images there too.

Sequences other than `options.extra["sequences"]` (default T1, T2, PD; IXI also has MRA and
DTI) are skipped by configuration and counted in `reader.skipped`. A NIfTI whose name is not
an IXI name is quarantined. All records are "train": the mixture makes subject-level splits.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from healthgpt.data.decode.deid import pseudonym
from healthgpt.data.decode.nifti import (
    Volume,
    declared_bytes,
    is_nifti,
    load_volume,
    load_volume_bytes,
    nifti_stem,
)
from healthgpt.data.limits import exceeds, read_capped
from healthgpt.data.sources.base import BadInput, Outcome, SourceReader
from healthgpt.data.sources.volumes import image_slice_records, prepare
from healthgpt.data.vocab import normalize_body_part

NAME_PATTERN = re.compile(
    r"^IXI(?P<id>\d+)-(?P<site>[A-Za-z]+)-(?P<num>\d+)-(?P<sequence>T1|T2|PD|MRA|DTI(?:-\d+)?)"
    r"\.nii(?:\.gz)?$"
)
TAR_PATTERN = re.compile(r"^IXI-[A-Za-z0-9]+\.tar(?:\.gz)?$")
DEFAULT_SEQUENCES = ("T1", "T2", "PD")

_MEMBER_KINDS = {
    tarfile.DIRTYPE: "directory",
    tarfile.FIFOTYPE: "FIFO",
    tarfile.SYMTYPE: "symbolic link",
    tarfile.LNKTYPE: "hard link",
    tarfile.CHRTYPE: "character device",
    tarfile.BLKTYPE: "block device",
}


class IxiReader(SourceReader):
    name = "ixi"
    extra_keys = frozenset({"sequences", "spacing"})
    expected_layout = """\
<root>/
  IXI-T1.tar   IXI-T2.tar   IXI-PD.tar      (as downloaded; members are read in place)
  and/or extracted files anywhere below the root:
  IXI<ID>-<Site>-<Num>-<T1|T2|PD>.nii.gz   (e.g. IXI002-Guys-0828-T1.nii.gz)"""

    def layout_problem(self) -> str | None:
        for path in self.root.rglob("*"):
            if TAR_PATTERN.match(path.name) or (path.name.startswith("IXI") and is_nifti(path)):
                return None
        return "no IXI-*.tar archive and no IXI*.nii.gz file found"

    @property
    def sequences(self) -> tuple[str, ...]:
        return tuple(self.options.extra.get("sequences", DEFAULT_SEQUENCES))

    def items(self) -> Iterator[Outcome]:
        seen: dict[str, str] = {}
        limits = self.options.limits
        for path in sorted(p for p in self.root.rglob("*") if p.is_file()):
            rel = self.rel(path)
            if not (TAR_PATTERN.match(path.name) or is_nifti(path)):
                continue
            try:
                self.safe_path(rel)
            except BadInput as exc:
                yield Outcome.reject(rel, str(exc), rel)
                continue
            if TAR_PATTERN.match(path.name):
                yield from self._tar_items(path, seen)
            elif is_nifti(path):
                yield from self._volume_item(
                    path.name, rel, lambda p=path: load_volume(p, limits=limits), seen
                )

    def _tar_items(self, path: Path, seen: dict[str, str]) -> Iterator[Outcome]:
        """Stream the archive member by member; a damaged archive ends in one quarantine row.

        A member is judged by its header first (name, sequence, size): one of an unselected
        sequence or over `max_tar_member_bytes` is passed over unread (the stream skips it
        in bounded blocks).
        """
        rel = self.rel(path)
        count = 0
        limits = self.options.limits
        try:
            with tarfile.open(path, mode="r|*") as archive:
                for member in archive:
                    if not is_nifti(member.name):
                        continue
                    if not member.isfile():
                        if self._selected(Path(member.name).name):
                            kind = _MEMBER_KINDS.get(member.type, "special file")
                            item = f"{rel}:{member.name}"
                            yield Outcome.reject(
                                item, f"tar member is a {kind}, not a regular file", item
                            )
                        continue
                    count += 1
                    name = Path(member.name).name
                    item = f"{rel}:{member.name}"
                    if member.size > limits.max_tar_member_bytes and self._selected(name):
                        reason = exceeds(
                            "max_tar_member_bytes",
                            member.size,
                            limits.max_tar_member_bytes,
                            "tar member skipped unread: size",
                        )
                        yield Outcome.reject(item, str(reason), item)
                        continue

                    if not self._selected(name):  # judged by name, never read
                        yield from self._volume_item(name, item, lambda: None, seen)
                        continue
                    try:
                        data = self._read_member(archive, member, name)
                    except BadInput as exc:
                        yield Outcome.reject(item, str(exc), item)
                        continue
                    yield from self._volume_item(
                        name,
                        item,
                        lambda data=data, name=name: load_volume_bytes(data, name, limits=limits),
                        seen,
                    )
        except (tarfile.TarError, EOFError, OSError) as exc:
            yield Outcome.reject(
                f"{rel} after member {count}",
                f"truncated or corrupt tar archive: {type(exc).__name__}: {exc}",
                rel,
            )

    def _read_member(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, name: str
    ) -> bytearray:
        """A selected member's bytes: its NIfTI header first, checked against the limits,
        then at most the bytes that header needs (a member far larger than its header
        declares is refused before its body is read)."""
        limits = self.options.limits
        stream = archive.extractfile(member)
        head = stream.read(1 << 16)
        needed = declared_bytes(head, name, limits)
        # Compressed data may exceed the raw size by a little; a raw one may carry padding.
        cap = min(limits.max_tar_member_bytes, needed + (needed >> 8) + (1 << 16))
        if member.size > cap:
            raise BadInput(
                f"tar member skipped unread: size {member.size:,} is more than the "
                f"{needed:,} bytes its NIfTI header declares"
            )
        return read_capped(stream, cap, "tar member", "max_tar_member_bytes", initial=head)

    def _selected(self, name: str) -> bool:
        """Is `name` an IXI volume of a selected sequence (one this run would read)?"""
        match = NAME_PATTERN.match(name)
        return match is not None and match["sequence"] in self.sequences

    def _volume_item(self, name: str, rel: str, load, seen: dict[str, str]) -> Iterator[Outcome]:
        match = NAME_PATTERN.match(name)
        if match is None:
            yield Outcome.reject(
                rel, "file name is not IXI<ID>-<Site>-<Num>-<T1|T2|PD>.nii.gz", rel
            )
            return
        sequence = match["sequence"]
        if sequence not in self.sequences:
            self.skipped[f"sequence {sequence} not selected"] += 1
            return
        stem = nifti_stem(name)
        if stem in seen:
            yield Outcome.reject(rel, f"duplicate of {seen[stem]}", rel)
            return
        seen[stem] = rel
        yield self.guard(rel, rel, lambda: self._records(load(), match, stem, rel))

    def _records(self, volume: Volume, match: re.Match[str], stem: str, rel: str) -> list[dict]:
        return image_slice_records(
            prepare(volume, self.options),
            source=self.name,
            orig_id=stem,
            modality="MRI",
            options=self.options,
            subject_id=pseudonym(f"IXI{match['id']}", self.options.deid_salt, prefix="subj"),
            body_part=normalize_body_part("brain"),
            orig_path=rel,
            meta={"sequence": match["sequence"], "site": match["site"], "anatomy": "brain"},
        )
