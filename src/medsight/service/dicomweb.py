"""DICOMweb query and retrieve (PS3.18): QIDO-RS for studies, series and instances, and
WADO-RS for instances, series, studies, metadata, frames and rendered images, over the
instances the service stored and the DICOM results it wrote (SEG, SR, SC), so that OHIF,
Weasis or any DICOMweb client can be pointed at ``/dicom-web``.

Reading roles only (clinician, admin), each request audited with the study UIDs it
answered; the ``service`` role gets 403. Attributes come from the stored files' headers
(read once per file and kept in a bounded cache); bulk data is never inlined in metadata.
"""

from __future__ import annotations

import functools
import io
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request  # module level: FastAPI resolves route annotations here

from medsight.analysis.inputs import study_key_of
from medsight.service.auth import User

__all__ = ["Catalogue", "QidoQuery", "QueryError", "multipart", "parse_qido"]

# attributes returned by default at each level (PS3.18 Table 6.7.1-2), by keyword
STUDY_FIELDS = (
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)
SERIES_FIELDS = (
    "Modality",
    "SeriesDescription",
    "SeriesNumber",
    "SeriesInstanceUID",
    "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate",
)
INSTANCE_FIELDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)
# the matching keys each level accepts (as keywords; a tag "0020000D" is translated)
MATCHING = {
    "studies": {
        "StudyInstanceUID",
        "PatientID",
        "PatientName",
        "AccessionNumber",
        "StudyDate",
        "StudyTime",
        "ModalitiesInStudy",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
    },
    "series": {"SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription"},
    "instances": {"SOPInstanceUID", "SOPClassUID", "InstanceNumber"},
}
CONTROL = {"limit", "offset", "includefield", "fuzzymatching"}
_DATE = re.compile(r"^\d{8}$")
_UID = re.compile(r"^[0-9.]{1,64}$")


class QueryError(ValueError):
    """A query the server refuses with 400 and this reason."""


@dataclass(frozen=True)
class QidoQuery:
    matches: dict[str, str]
    include: frozenset[str] | None  # None: all attributes ("includefield=all")
    limit: int
    offset: int


def _keyword(key: str) -> str:
    from pydicom.datadict import keyword_for_tag

    if re.fullmatch(r"[0-9A-Fa-f]{8}", key):
        return keyword_for_tag(int(key, 16)) or key
    return key


def parse_qido(level: str, params: list[tuple[str, str]]) -> QidoQuery:
    """Check and translate the query parameters of a QIDO-RS request at ``level``
    (studies, series, instances; a broader level's keys match too)."""
    from pydicom.datadict import tag_for_keyword

    allowed = set(MATCHING["studies"])
    if level in ("series", "instances"):
        allowed |= MATCHING["series"]
    if level == "instances":
        allowed |= MATCHING["instances"]
    matches: dict[str, str] = {}
    include: set[str] | None = set()
    limit, offset = 100, 0
    for raw, value in params:
        key = _keyword(raw)
        if key in ("limit", "offset"):
            if not value.isdigit():
                raise QueryError(f"{key} must be a whole number, not {value!r}")
            if key == "limit":
                limit = min(int(value), 1000)
            else:
                offset = int(value)
        elif key == "includefield":
            for field in value.split(","):
                if field == "all":
                    include = None
                elif include is not None:
                    name = _keyword(field)
                    if tag_for_keyword(name) is None:
                        raise QueryError(f"includefield {field!r} is not a DICOM attribute")
                    include.add(name)
        elif key == "fuzzymatching":
            continue
        elif key in allowed:
            _check_value(key, value)
            matches[key] = value
        elif tag_for_keyword(key) is not None:
            raise QueryError(f"{raw} is not a matching key at the {level} level")
        else:
            raise QueryError(f"{raw!r} is not a DICOM attribute or a query parameter")
    return QidoQuery(matches, None if include is None else frozenset(include), limit, offset)


def _check_value(key: str, value: str) -> None:
    if key in ("StudyDate", "PerformedProcedureStepStartDate"):
        parts = value.split("-")
        if len(parts) > 2 or not all(p == "" or _DATE.match(p) for p in parts) or value == "-":
            raise QueryError(f"{key} {value!r} is not a date or range YYYYMMDD[-YYYYMMDD]")
        import datetime as _dt

        for part in parts:
            if part:
                try:
                    _dt.datetime.strptime(part, "%Y%m%d")
                except ValueError:
                    raise QueryError(f"{key} {value!r}: {part} is not a calendar date") from None
    elif key.endswith("UID") and not all(_UID.match(uid) for uid in value.split(",")):
        raise QueryError(f"{key} {value!r} is not a list of UIDs")


def _matches(value: Any, wanted: str, key: str) -> bool:
    """DICOM matching: list of UIDs, date ranges, wildcards (* and ?), case-insensitive
    for names; multi-valued attributes match when any value does."""
    values = [str(v) for v in value] if isinstance(value, list | tuple) else [str(value or "")]
    if key.endswith("UID"):
        return any(v in wanted.split(",") for v in values)
    if key in ("StudyDate", "PerformedProcedureStepStartDate") and "-" in wanted:
        low, high = wanted.split("-")
        return any((not low or v >= low) and (not high or v <= high) for v in values if v)
    if "*" in wanted or "?" in wanted:
        pattern = re.escape(wanted).replace(r"\*", ".*").replace(r"\?", ".")
        return any(re.fullmatch(pattern, v, re.IGNORECASE) for v in values)
    if key in ("PatientName", "ReferringPhysicianName"):
        return any(v.lower() == wanted.lower() for v in values)
    return wanted in values


@dataclass(frozen=True)
class Entry:
    path: Path
    study: str
    series: str
    sop: str
    result: bool  # written by medsight (SEG, SR, SC)


@functools.lru_cache(maxsize=20_000)
def _header(path: Path, mtime_ns: int) -> Any:
    """The header as the readers take it (broken elements dropped, pixel data deferred)."""
    from medsight.io.dicom._header import read_header

    return read_header(path)


def header(entry: Entry) -> Any:
    return _header(entry.path, entry.path.stat().st_mtime_ns)


class Catalogue:
    """What DICOMweb serves: the stored instances and medsight's DICOM results."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.results = store.data_dir / "results"

    def study_uids(self) -> list[str]:
        from sqlalchemy import select

        table = self.store.instances
        with self.store.engine.connect() as connection:
            return list(
                connection.execute(
                    select(table.c.study_instance_uid)
                    .distinct()
                    .order_by(table.c.study_instance_uid)
                ).scalars()
            )

    def entries(self, study: str) -> list[Entry]:
        found = [
            Entry(i.path, study, i.series_instance_uid, i.sop_instance_uid, False)
            for i in self.store.instances_of(study)
        ]
        folder = self.results / study_key_of(study)
        document = folder / "result.json"
        if document.is_file():
            for analysis in json.loads(document.read_text()).get("analyses", []):
                for relative in analysis.get("dicom_outputs", []):
                    path = folder / relative
                    if path.is_file():
                        dataset = _header(path, path.stat().st_mtime_ns)
                        found.append(
                            Entry(
                                path,
                                study,
                                str(dataset.SeriesInstanceUID),
                                str(dataset.SOPInstanceUID),
                                True,
                            )
                        )
        return found

    def select(
        self, study: str | None = None, series: str | None = None, sop: str | None = None
    ) -> list[Entry]:
        studies = [study] if study else self.study_uids()
        return [
            e
            for s in studies
            for e in self.entries(s)
            if (series is None or e.series == series) and (sop is None or e.sop == sop)
        ]


def _attributes(dataset: Any, keywords: tuple[str, ...] | None) -> dict[str, Any]:
    """DICOM JSON of ``keywords`` (all but bulk data when None)."""
    import pydicom

    if keywords is None:
        subset = pydicom.Dataset()
        for element in dataset:
            if element.tag != 0x7FE00010 and element.VR not in ("OB", "OW", "OF", "OD", "UN"):
                subset.add(element)
    else:
        subset = pydicom.Dataset()
        for keyword in keywords:
            if keyword in dataset:
                subset.add(dataset[keyword])
    return dict(subset.to_json_dict(bulk_data_threshold=1 << 20, bulk_data_element_handler=None))


def _put(document: dict[str, Any], keyword: str, vr: str, values: list[Any]) -> None:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    assert tag is not None
    document[f"{tag:08X}"] = {"vr": vr, "Value": values} if values else {"vr": vr}


def search(
    catalogue: Catalogue,
    level: str,
    query: QidoQuery,
    study: str | None = None,
    series: str | None = None,
) -> list[dict[str, Any]]:
    """QIDO-RS: the matching studies, series or instances as DICOM JSON."""
    if study is None and level == "studies":
        study = query.matches.get("StudyInstanceUID")
    if study and "," in study:
        studies = study.split(",")
    else:
        studies = [study] if study else catalogue.study_uids()
    answers: list[dict[str, Any]] = []
    extra = tuple(sorted(query.include)) if query.include is not None else None
    for uid in studies:
        entries = [e for e in catalogue.entries(uid) if series is None or e.series == series]
        if not entries:
            continue
        first = header(entries[0])
        modalities = sorted({str(header(e).get("Modality", "")) for e in entries} - {""})
        study_values = {k: first.get(k) for k in MATCHING["studies"]} | {
            "ModalitiesInStudy": modalities
        }
        if not all(
            _matches(study_values.get(k), v, k)
            for k, v in query.matches.items()
            if k in MATCHING["studies"]
        ):
            continue
        if level == "studies":
            fields = STUDY_FIELDS + (extra or ()) if query.include is not None else None
            document = _attributes(first, fields)
            _put(document, "ModalitiesInStudy", "CS", modalities)
            _put(document, "NumberOfStudyRelatedSeries", "IS", [len({e.series for e in entries})])
            _put(document, "NumberOfStudyRelatedInstances", "IS", [len(entries)])
            answers.append(document)
            continue
        by_series: dict[str, list[Entry]] = {}
        for entry in entries:
            by_series.setdefault(entry.series, []).append(entry)
        for members in by_series.values():
            head = header(members[0])
            if not all(
                _matches(head.get(k), v, k)
                for k, v in query.matches.items()
                if k in MATCHING["series"]
            ):
                continue
            if level == "series":
                fields = (
                    ("StudyInstanceUID", *SERIES_FIELDS, *(extra or ()))
                    if query.include is not None
                    else None
                )
                document = _attributes(head, fields)
                _put(document, "NumberOfSeriesRelatedInstances", "IS", [len(members)])
                answers.append(document)
                continue
            for entry in members:
                dataset = header(entry)
                if all(
                    _matches(dataset.get(k), v, k)
                    for k, v in query.matches.items()
                    if k in MATCHING["instances"]
                ):
                    fields = (
                        ("StudyInstanceUID", "SeriesInstanceUID", *INSTANCE_FIELDS, *(extra or ()))
                        if query.include is not None
                        else None
                    )
                    answers.append(_attributes(dataset, fields))
    return answers[query.offset : query.offset + query.limit]


def metadata(entries: list[Entry], base: str) -> list[dict[str, Any]]:
    """WADO-RS metadata: every attribute, pixel data as a BulkDataURI to its frames."""
    documents = []
    for entry in entries:
        document = _attributes(header(entry), None)
        document["7FE00010"] = {
            "vr": "OW",
            "BulkDataURI": f"{base}/studies/{entry.study}/series/{entry.series}"
            f"/instances/{entry.sop}/frames/1",
        }
        documents.append(document)
    return documents


def multipart(parts: Iterator[tuple[bytes, str]]) -> tuple[bytes, str]:
    """A multipart/related body of (payload, part content type); returns (body, boundary)."""
    boundary = secrets.token_hex(16)
    chunks = []
    for payload, content_type in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode())
        chunks.append(payload)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), boundary


def frames(entry: Entry, numbers: list[int]) -> list[bytes]:
    """Frames (1-based) as uncompressed little-endian pixel bytes; IndexError when a frame
    is out of range."""
    import pydicom

    dataset = pydicom.dcmread(entry.path)
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    for number in numbers:
        if not 1 <= number <= count:
            raise IndexError(f"frame {number} is out of range (the instance has {count})")
    pixels = dataset.pixel_array
    if count == 1:
        pixels = pixels[None]
    return [pixels[number - 1].tobytes() for number in numbers]


def rendered(entry: Entry, frame: int = 1) -> bytes:
    """A PNG of one frame with the instance's own window (or its full range)."""
    import numpy as np
    import pydicom
    from PIL import Image as PILImage
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    dataset = pydicom.dcmread(entry.path)
    count = int(dataset.get("NumberOfFrames", 1) or 1)
    if not 1 <= frame <= count:
        raise IndexError(f"frame {frame} is out of range (the instance has {count})")
    pixels = dataset.pixel_array
    if count > 1:
        pixels = pixels[frame - 1]
    if pixels.ndim == 2:
        # pydicom's modality and VOI transforms (rescale or LUT, then the image's own window
        # or VOI LUT); without a window, the frame's full range
        values = apply_voi_lut(apply_modality_lut(pixels, dataset), dataset).astype(np.float32)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / max(high - low, 1e-6) * 255
        if str(dataset.get("PhotometricInterpretation", "")) == "MONOCHROME1":
            scaled = 255 - scaled
        image = PILImage.fromarray(scaled.astype(np.uint8))
    else:
        image = PILImage.fromarray(pixels.astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def add_dicomweb(app: Any, store: Any, *, reader: Any, audit: Any) -> None:
    """The QIDO-RS and WADO-RS routes under /dicom-web (STOW-RS is in app.py)."""
    from fastapi import HTTPException
    from fastapi.responses import JSONResponse, Response

    catalogue = Catalogue(store)
    dicom_json = "application/dicom+json"

    def uid(value: str, what: str) -> str:
        if not _UID.match(value):
            raise HTTPException(400, f"{what} {value!r} is not a DICOM UID")
        return value

    def qido(
        level: str,
        request: Request,
        user: User,
        study: str | None = None,
        series: str | None = None,
    ) -> Any:
        try:
            query = parse_qido(level, list(request.query_params.multi_items()))
        except QueryError as exc:
            raise HTTPException(400, str(exc)) from None
        found = search(catalogue, level, query, study, series)
        answered = sorted({str(d.get("0020000D", {}).get("Value", [study])[0]) for d in found})
        audit.append(
            user.name,
            "dicomweb-query",
            study_key_of(study) if study else "-",
            {"level": level, "studies": answered[:1000], "results": len(found)},
        )
        return JSONResponse(found, media_type=dicom_json)

    def chosen(study: str, series: str | None = None, sop: str | None = None) -> list[Entry]:
        uid(study, "StudyInstanceUID")
        if series is not None:
            uid(series, "SeriesInstanceUID")
        if sop is not None:
            uid(sop, "SOPInstanceUID")
        entries = catalogue.select(study, series, sop)
        if not entries:
            what = sop or series or study
            raise HTTPException(404, f"no stored instance for {what}")
        return entries

    def retrieved(user: User, study: str, what: str, count: int) -> None:
        audit.append(
            user.name, "dicomweb-retrieve", study_key_of(study), {"what": what, "instances": count}
        )

    def instances_response(entries: list[Entry]) -> Response:
        body, boundary = multipart((e.path.read_bytes(), "application/dicom") for e in entries)
        return Response(
            body,
            media_type=f'multipart/related; type="application/dicom"; boundary={boundary}',
        )

    @app.get("/dicom-web/studies")
    def search_studies(request: Request, user: User = reader) -> Any:
        return qido("studies", request, user)

    @app.get("/dicom-web/series")
    def search_all_series(request: Request, user: User = reader) -> Any:
        return qido("series", request, user)

    @app.get("/dicom-web/instances")
    def search_all_instances(request: Request, user: User = reader) -> Any:
        return qido("instances", request, user)

    @app.get("/dicom-web/studies/{study}/series")
    def search_series(study: str, request: Request, user: User = reader) -> Any:
        return qido("series", request, user, uid(study, "StudyInstanceUID"))

    @app.get("/dicom-web/studies/{study}/instances")
    def search_study_instances(study: str, request: Request, user: User = reader) -> Any:
        return qido("instances", request, user, uid(study, "StudyInstanceUID"))

    @app.get("/dicom-web/studies/{study}/series/{series}/instances")
    def search_instances(study: str, series: str, request: Request, user: User = reader) -> Any:
        return qido(
            "instances",
            request,
            user,
            uid(study, "StudyInstanceUID"),
            uid(series, "SeriesInstanceUID"),
        )

    @app.get("/dicom-web/studies/{study}")
    def retrieve_study(study: str, user: User = reader) -> Any:
        entries = chosen(study)
        retrieved(user, study, "study", len(entries))
        return instances_response(entries)

    @app.get("/dicom-web/studies/{study}/metadata")
    def study_metadata(study: str, request: Request, user: User = reader) -> Any:
        entries = chosen(study)
        retrieved(user, study, "study metadata", len(entries))
        return JSONResponse(metadata(entries, _base(request)), media_type=dicom_json)

    @app.get("/dicom-web/studies/{study}/series/{series}")
    def retrieve_series(study: str, series: str, user: User = reader) -> Any:
        entries = chosen(study, series)
        retrieved(user, study, f"series {series}", len(entries))
        return instances_response(entries)

    @app.get("/dicom-web/studies/{study}/series/{series}/metadata")
    def series_metadata(study: str, series: str, request: Request, user: User = reader) -> Any:
        entries = chosen(study, series)
        retrieved(user, study, f"series {series} metadata", len(entries))
        return JSONResponse(metadata(entries, _base(request)), media_type=dicom_json)

    @app.get("/dicom-web/studies/{study}/series/{series}/instances/{sop}")
    def retrieve_instance(study: str, series: str, sop: str, user: User = reader) -> Any:
        entries = chosen(study, series, sop)
        retrieved(user, study, f"instance {sop}", 1)
        return instances_response(entries)

    @app.get("/dicom-web/studies/{study}/series/{series}/instances/{sop}/metadata")
    def instance_metadata(
        study: str, series: str, sop: str, request: Request, user: User = reader
    ) -> Any:
        entries = chosen(study, series, sop)
        retrieved(user, study, f"instance {sop} metadata", 1)
        return JSONResponse(metadata(entries, _base(request)), media_type=dicom_json)

    @app.get("/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/{numbers}")
    def retrieve_frames(
        study: str, series: str, sop: str, numbers: str, user: User = reader
    ) -> Any:
        (entry,) = chosen(study, series, sop)
        try:
            wanted = [int(n) for n in numbers.split(",")]
        except ValueError:
            raise HTTPException(
                400, f"frame list {numbers!r} is not comma-separated numbers"
            ) from None
        try:
            payloads = frames(entry, wanted)
        except IndexError as exc:
            raise HTTPException(404, str(exc)) from None
        retrieved(user, study, f"instance {sop} frames {numbers}", 1)
        kind = "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
        body, boundary = multipart((p, kind) for p in payloads)
        return Response(
            body,
            media_type=f'multipart/related; type="application/octet-stream"; boundary={boundary}',
        )

    def rendered_response(study: str, series: str, sop: str, frame: int, user: User) -> Any:
        (entry,) = chosen(study, series, sop)
        try:
            png = rendered(entry, frame)
        except IndexError as exc:
            raise HTTPException(404, str(exc)) from None
        retrieved(user, study, f"instance {sop} rendered frame {frame}", 1)
        return Response(png, media_type="image/png")

    @app.get("/dicom-web/studies/{study}/series/{series}/instances/{sop}/rendered")
    def instance_rendered(study: str, series: str, sop: str, user: User = reader) -> Any:
        return rendered_response(study, series, sop, 1, user)

    @app.get("/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/{frame}/rendered")
    def frame_rendered(study: str, series: str, sop: str, frame: int, user: User = reader) -> Any:
        return rendered_response(study, series, sop, frame, user)


def _base(request: Any) -> str:
    return str(request.base_url).rstrip("/") + "/dicom-web"
