"""What `--keep-metadata` may write back: technical facts only, never free text, and a colour profile rebuilt.

Kept (the whole list, also in docs/cli.md): EXIF resolution, date/time and exposure facts (numbers and
dates only), GPS numbers and their N/S/E/W-style references (only with --keep-gps), the matching XMP
properties (dates, numbers, rating, `dc:format`, `xmpRights:Marked`), and an ICC colour profile only after
LittleCMS parses it and it is rebuilt from its colorimetric tags. Every value must have the shape of its
kind (a date, a number, one reference letter), so no kept field can carry a name. Everything else
(camera make/model/software, lens names, labels, creator tool, usage terms, descriptions, people, face
regions, serial numbers, owners, maker notes, thumbnails, private ICC tags) is dropped.
"""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass
from fractions import Fraction
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

from PIL import Image


@dataclass(frozen=True)
class ImageMetadata:
    """What a decoded input carried: metadata that is written back only on request, and encoding hints.

    `exif` and `xmp` already hold only allowed fields (see `safe_metadata`); `icc_profile` describes the
    decoded pixels (sRGB when an embedded profile was applied). The JPEG fields let a JPEG input be
    written back with its own quantization tables, so the output is about as large as the input.
    """

    exif: bytes | None = None
    icc_profile: bytes | None = None
    xmp: bytes | None = None
    source_format: str | None = None
    jpeg_qtables: tuple[tuple[int, ...], ...] | None = None
    jpeg_subsampling: int | None = None
    #: transparent pixels were composited on white: the caller should tell the user
    flattened_transparency: bool = False


def metadata_of(opened: Image.Image) -> ImageMetadata:
    """The allowed metadata of an open file (read before orientation is applied: a copy loses TIFF tags)."""
    try:
        exif = _allowed_exif(opened.getexif(), keep_gps=True)
    except Exception:  # unreadable EXIF is dropped, never a reason to refuse the photo
        exif = None
    xmp = opened.info.get("xmp") or opened.info.get("XML:com.adobe.xmp")
    qtables: tuple[tuple[int, ...], ...] | None = None
    subsampling: int | None = None
    if opened.format in ("JPEG", "MPO"):
        from PIL import JpegImagePlugin

        tables = getattr(opened, "quantization", None) or {}
        if tables:
            qtables = tuple(tuple(int(v) for v in tables[k]) for k in sorted(tables))
        sampling = JpegImagePlugin.get_sampling(opened)
        subsampling = sampling if sampling in (0, 1, 2) else None
    return ImageMetadata(
        exif=exif,
        icc_profile=opened.info.get("icc_profile") or None,  # cleaned by `decode` once it knows the mode
        xmp=filter_xmp(xmp, keep_gps=True) if xmp else None,
        source_format="JPEG" if opened.format == "MPO" else opened.format,
        jpeg_qtables=qtables,
        jpeg_subsampling=subsampling,
    )


# -- values: a kept field must have the shape of its kind ---------------------------------------

_SHAPES: dict[str, re.Pattern[str]] = {
    "number": re.compile(r"[-+0-9./ ]{1,64}"),  # integers, decimals, rationals (LensInfo: a few of them)
    "date": re.compile(
        r"[0-9]{4}([-:][0-9]{2}([-:][0-9]{2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.][0-9]{1,9})?)?"
        r"(Z|[+-][0-9]{2}:?[0-9]{2})?)?)?)?"
    ),
    "offset": re.compile(r"[+-][0-9]{2}:[0-9]{2}"),
    "digits": re.compile(r"[0-9]{1,9}"),
    "bool": re.compile(r"True|False"),
    "mime": re.compile(r"[a-z]{1,20}/[a-z0-9.+-]{1,40}"),
    "letter": re.compile(r"[NSEWTMKAV23]"),
    "coordinate": re.compile(r"[0-9]{1,3},[0-9]{1,2}([.][0-9]{1,9})?(,[0-9]{1,2}([.][0-9]{1,9})?)?[NSEW]"),
}


def _text_fits(kind: str, text: str) -> bool:
    return _SHAPES[kind].fullmatch(text.strip()) is not None


def _value_fits(kind: str, value: object) -> bool:
    """An EXIF value (as Pillow reads it) of the shape `kind` asks for; text only where the kind is textual."""
    if kind == "number":
        if isinstance(value, (tuple, list)):
            return 0 < len(value) <= 16 and all(_value_fits("number", v) for v in value)
        return isinstance(value, (int, float, Fraction)) or type(value).__name__ == "IFDRational"
    if kind == "bytes":  # tiny binary codes: GPSVersionID, AltitudeRef, FileSource, SceneType
        if isinstance(value, int):
            return 0 <= value < 16
        return isinstance(value, bytes) and 0 < len(value) <= 4 and all(v < 16 for v in value)
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            return False
    return isinstance(value, str) and _text_fits(kind, value.rstrip("\x00"))


# -- EXIF ---------------------------------------------------------------------------------------

_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
#: IFD0: XResolution, YResolution, ResolutionUnit, DateTime. Make, Model and Software are free text
#: (a phone's owner name, a studio's software name): dropped.
_IFD0_KINDS: dict[int, str] = {0x011A: "number", 0x011B: "number", 0x0128: "number", 0x0132: "date"}
#: Exif IFD: exposure, lens geometry, date and rendering facts. Left out on purpose: MakerNote (vendors store
#: serial numbers, owner names and face positions in it), UserComment, ImageUniqueID, CameraOwnerName,
#: BodySerialNumber, LensSerialNumber, LensMake and LensModel (free text), SubjectArea/SubjectLocation
#: (where the face is).
_EXIF_IFD_KINDS: dict[int, str] = {
    **dict.fromkeys(
        (
            0x829A, 0x829D, 0x8822, 0x8827, 0x8830, 0x8832, 0x9201, 0x9202, 0x9203, 0x9204, 0x9205, 0x9206,
            0x9207, 0x9208, 0x9209, 0x920A, 0xA001, 0xA20E, 0xA20F, 0xA210, 0xA217, 0xA401, 0xA402, 0xA403,
            0xA404, 0xA405, 0xA406, 0xA407, 0xA408, 0xA409, 0xA40A, 0xA40C, 0xA432,
        ),
        "number",
    ),
    0x9000: "digits", 0x9003: "date", 0x9004: "date", 0x9010: "offset", 0x9011: "offset", 0x9012: "offset",
    0x9290: "digits", 0x9291: "digits", 0x9292: "digits", 0xA300: "bytes", 0xA301: "bytes",
}  # fmt: skip
#: GPS IFD (only with --keep-gps): position, altitude, time, direction and speed, as numbers and reference
#: letters. Left out: GPSSatellites, GPSMapDatum, GPSProcessingMethod, GPSAreaInformation (free text).
_GPS_KINDS: dict[int, str] = {
    0: "bytes", 1: "letter", 2: "number", 3: "letter", 4: "number", 5: "bytes", 6: "number", 7: "number",
    9: "letter", 10: "letter", 11: "number", 12: "letter", 13: "number", 14: "letter", 15: "number",
    16: "letter", 17: "number", 19: "letter", 20: "number", 21: "letter", 22: "number", 23: "letter",
    24: "number", 25: "letter", 26: "number", 29: "date", 30: "number", 31: "number",
}  # fmt: skip


def _kept(tags: object, kinds: dict[int, str]) -> dict[int, object]:
    items = tags.items() if hasattr(tags, "items") else ()
    return {tag: value for tag, value in items if tag in kinds and _value_fits(kinds[tag], value)}


def _allowed_exif(exif: Image.Exif, *, keep_gps: bool) -> bytes | None:
    """A fresh EXIF block with only the allowed tags (no orientation: it is applied to the pixels)."""
    fresh = Image.Exif()
    fresh.update(_kept({tag: exif[tag] for tag in _IFD0_KINDS if tag in exif}, _IFD0_KINDS))
    sub = _kept(exif.get_ifd(_EXIF_IFD), _EXIF_IFD_KINDS)
    if sub:
        fresh.get_ifd(_EXIF_IFD).update(sub)
    gps = _kept(exif.get_ifd(_GPS_IFD), _GPS_KINDS) if keep_gps else {}
    if gps:
        fresh.get_ifd(_GPS_IFD).update(gps)
    if not len(fresh) and not sub and not gps:
        return None
    return bytes(fresh.tobytes())


def exif_from_bytes(data: bytes) -> Image.Exif:
    exif = Image.Exif()
    exif.load(data)
    return exif


# -- XMP ----------------------------------------------------------------------------------------

_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_N = "number"
#: XMP namespace -> (prefix written, {property kept: the shape of its value}). Everything else is dropped:
#: free text (xmp:Label, xmp:CreatorTool, tiff:Make/Model/Software, lens names, xmpRights:UsageTerms and
#: WebStatement, photoshop:ICCProfile), MWG/Microsoft face regions, IPTC persons and creator contacts,
#: dc:creator/rights/description/subject, photoshop by-lines and places, people keywords, camera serials
#: and owners, embedded images, edit history.
_XMP_ALLOWED: dict[str, tuple[str, dict[str, str]]] = {
    "http://ns.adobe.com/xap/1.0/": (
        "xmp",
        {"CreateDate": "date", "ModifyDate": "date", "MetadataDate": "date", "Rating": _N},
    ),
    "http://ns.adobe.com/tiff/1.0/": (
        "tiff",
        {"XResolution": _N, "YResolution": _N, "ResolutionUnit": _N, "DateTime": "date"},
    ),
    "http://ns.adobe.com/exif/1.0/": (
        "exif",
        {
            **dict.fromkeys(
                "ExposureTime FNumber ExposureProgram ISOSpeedRatings ShutterSpeedValue ApertureValue "
                "BrightnessValue ExposureBiasValue MaxApertureValue SubjectDistance MeteringMode LightSource "
                "FocalLength ColorSpace FocalPlaneXResolution FocalPlaneYResolution FocalPlaneResolutionUnit "
                "SensingMethod FileSource SceneType CustomRendered ExposureMode WhiteBalance DigitalZoomRatio "
                "FocalLengthIn35mmFilm SceneCaptureType GainControl Contrast Saturation Sharpness "
                "SubjectDistanceRange".split(),
                _N,
            ),
            "ExifVersion": "digits",
            "DateTimeOriginal": "date",
            "DateTimeDigitized": "date",
        },
    ),
    "http://cipa.jp/exif/1.0/": (
        "exifEX",
        dict.fromkeys("LensSpecification PhotographicSensitivity SensitivityType RecommendedExposureIndex".split(), _N),
    ),
    "http://ns.adobe.com/exif/1.0/aux/": (
        "aux",
        dict.fromkeys("LensInfo LensID FlashCompensation ApproximateFocusDistance".split(), _N),
    ),
    "http://ns.adobe.com/photoshop/1.0/": ("photoshop", {"DateCreated": "date", "ColorMode": _N}),
    "http://purl.org/dc/elements/1.1/": ("dc", {"format": "mime"}),
    "http://ns.adobe.com/xap/1.0/rights/": ("xmpRights", {"Marked": "bool"}),
}
_XMP_GPS_NAMESPACE = "http://ns.adobe.com/exif/1.0/"
#: exif:GPS* properties kept with --keep-gps, and their shapes (GPSMapDatum, GPSProcessingMethod,
#: GPSAreaInformation and GPSSatellites are free text: dropped).
_XMP_GPS: dict[str, str] = {
    "GPSVersionID": _N, "GPSLatitude": "coordinate", "GPSLongitude": "coordinate", "GPSAltitudeRef": _N,
    "GPSAltitude": _N, "GPSTimeStamp": "date", "GPSStatus": "letter", "GPSMeasureMode": "letter", "GPSDOP": _N,
    "GPSSpeedRef": "letter", "GPSSpeed": _N, "GPSTrackRef": "letter", "GPSTrack": _N,
    "GPSImgDirectionRef": "letter", "GPSImgDirection": _N, "GPSDestLatitude": "coordinate",
    "GPSDestLongitude": "coordinate", "GPSDestBearingRef": "letter", "GPSDestBearing": _N,
    "GPSDestDistanceRef": "letter", "GPSDestDistance": _N, "GPSDifferential": _N, "GPSHPositioningError": _N,
}  # fmt: skip


def safe_metadata(metadata: ImageMetadata, *, keep_gps: bool = False) -> ImageMetadata:
    """Only what may be written back: allowed EXIF and XMP fields (GPS only with `keep_gps`), a rebuilt ICC profile.

    Fails closed: EXIF, XMP or an ICC profile that cannot be parsed is dropped whole.
    """
    exif: bytes | None = None
    if metadata.exif:
        try:
            exif = _allowed_exif(exif_from_bytes(metadata.exif), keep_gps=keep_gps)
        except Exception:
            exif = None
    xmp = filter_xmp(metadata.xmp, keep_gps=keep_gps) if metadata.xmp else None
    return ImageMetadata(
        exif=exif,
        icc_profile=clean_icc(metadata.icc_profile) if metadata.icc_profile else None,
        xmp=xmp,
        source_format=metadata.source_format,
        jpeg_qtables=metadata.jpeg_qtables,
        jpeg_subsampling=metadata.jpeg_subsampling,
        flattened_transparency=metadata.flattened_transparency,
    )


def filter_xmp(xmp: bytes | str, *, keep_gps: bool = False) -> bytes | None:
    """A new XMP packet holding only allowed properties of `xmp`; None when nothing is left or it cannot be parsed.

    Parsed with a real XML parser; a packet with a DTD (entity tricks) or one that does not parse is dropped whole.
    """
    try:  # XMP in UTF-16/32 is legal but rare: refusing it keeps the DTD check below honest
        text = xmp if isinstance(xmp, str) else bytes(xmp).decode("utf-8")
    except UnicodeDecodeError:
        return None
    text = text.strip("\x00 \t\r\n\ufeff")
    if "<!DOCTYPE" in text.upper() or "<!ENTITY" in text.upper():
        return None
    try:
        root = ElementTree.fromstring(text.encode("utf-8"))
    except (ElementTree.ParseError, ValueError):
        return None
    kept: list[str] = []
    namespaces: dict[str, str] = {}
    rdf_roots = [root] if root.tag == f"{{{_RDF}}}RDF" else list(root.iter(f"{{{_RDF}}}RDF"))
    for rdf in rdf_roots:
        for description in rdf.findall(f"{{{_RDF}}}Description"):
            for name, value in description.attrib.items():
                allowed = _allowed_property(name, keep_gps)
                if allowed is not None and _text_fits(allowed[3], value):
                    namespaces[allowed[0]] = allowed[1]
                    kept.append(f"<{allowed[2]}>{escape(value)}</{allowed[2]}>")
            for child in description:
                allowed = _allowed_property(child.tag, keep_gps)
                serialized = _simple_value(child, allowed[2], allowed[3]) if allowed is not None else None
                if allowed is not None and serialized is not None:
                    namespaces[allowed[0]] = allowed[1]
                    kept.append(serialized)
    if not kept:
        return None
    declarations = "".join(f" xmlns:{prefix}={quoteattr(uri)}" for uri, prefix in sorted(namespaces.items()))
    packet = (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        f'<rdf:RDF xmlns:rdf="{_RDF}"><rdf:Description rdf:about=""{declarations}>'
        + "".join(kept)
        + '</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    )
    ElementTree.fromstring(packet.encode("utf-8"))  # what we write must itself be well-formed
    return packet.encode("utf-8")


def _allowed_property(tag: str, keep_gps: bool) -> tuple[str, str, str, str] | None:
    """(namespace, prefix, prefix:name, shape of its value) of an allowed property `{namespace}name`, else None."""
    if not tag.startswith("{"):
        return None
    namespace, _, name = tag[1:].partition("}")
    if namespace == _XMP_GPS_NAMESPACE and name.startswith("GPS"):
        kind = _XMP_GPS.get(name) if keep_gps else None
        return (namespace, "exif", f"exif:{name}", kind) if kind is not None else None
    entry = _XMP_ALLOWED.get(namespace)
    if entry is None or name not in entry[1]:
        return None
    return namespace, entry[0], f"{entry[0]}:{name}", entry[1][name]


def _simple_value(element: ElementTree.Element, qname: str, kind: str) -> str | None:
    """A property whose text (or each rdf:Seq/Bag/Alt item) has the shape `kind`, re-serialized; else None."""
    if element.attrib:
        return None
    children = list(element)
    if not children:
        if not _text_fits(kind, element.text or ""):
            return None
        return f"<{qname}>{escape(element.text or '')}</{qname}>"
    if len(children) != 1 or children[0].tag not in (f"{{{_RDF}}}Seq", f"{{{_RDF}}}Bag", f"{{{_RDF}}}Alt"):
        return None
    container = children[0]
    items: list[str] = []
    for item in container:
        if (
            item.tag != f"{{{_RDF}}}li"
            or len(item)
            or set(item.attrib) - {_XML_LANG}
            or not _text_fits(kind, item.text or "")
        ):
            return None
        lang = f" xml:lang={quoteattr(item.attrib[_XML_LANG])}" if _XML_LANG in item.attrib else ""
        items.append(f"<rdf:li{lang}>{escape(item.text or '')}</rdf:li>")
    kind = container.tag.rpartition("}")[2]
    return f"<{qname}><rdf:{kind}>{''.join(items)}</rdf:{kind}></{qname}>"


# -- ICC profiles -------------------------------------------------------------------------------

#: Colorimetric tags a rebuilt profile keeps, and the tag types each may have. A matrix/TRC profile (sRGB,
#: Display P3, Adobe RGB, a camera's grey profile) is fully described by them; anything else a profile
#: holds (descriptions, copyright, private tags, LUTs where data can hide) is not copied.
_ICC_TAGS: dict[bytes, tuple[bytes, ...]] = {
    b"wtpt": (b"XYZ ",),
    b"bkpt": (b"XYZ ",),
    b"rXYZ": (b"XYZ ",),
    b"gXYZ": (b"XYZ ",),
    b"bXYZ": (b"XYZ ",),
    b"rTRC": (b"curv", b"para"),
    b"gTRC": (b"curv", b"para"),
    b"bTRC": (b"curv", b"para"),
    b"kTRC": (b"curv", b"para"),
    b"chad": (b"sf32",),
}
_ICC_NEEDS: dict[bytes, tuple[bytes, ...]] = {
    b"RGB ": (b"wtpt", b"rXYZ", b"gXYZ", b"bXYZ", b"rTRC", b"gTRC", b"bTRC"),
    b"GRAY": (b"wtpt", b"kTRC"),
}
_PARA_PARAMETERS = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}
_ICC_DESCRIPTION = "Colour profile rebuilt by rp"


def clean_icc(data: bytes) -> bytes | None:
    """The profile rebuilt from its colorimetric tags once LittleCMS has parsed it, else None.

    LittleCMS copies tags it does not know byte for byte when it saves a profile, so its own output
    could still carry a hidden image; the rebuilt profile holds only the tags above, each exactly as
    long as its type says, a fixed description and a header without creator, device or date.
    """
    try:
        from PIL import ImageCms

        ImageCms.ImageCmsProfile(io.BytesIO(data))
        rebuilt = _rebuilt_icc(bytes(data))
        if rebuilt is not None:
            ImageCms.ImageCmsProfile(io.BytesIO(rebuilt))  # what we write must parse too
        return rebuilt
    except Exception:  # not a profile LittleCMS can read, or one this rebuild does not cover: dropped
        return None


def _rebuilt_icc(data: bytes) -> bytes | None:
    if len(data) < 132 or data[36:40] != b"acsp":
        return None
    space, count = data[16:20], struct.unpack(">I", data[128:132])[0]
    if space not in _ICC_NEEDS or data[12:16] not in (b"mntr", b"scnr", b"spac") or count > 100:
        return None
    tags: dict[bytes, bytes] = {}
    for i in range(count):
        signature, offset, size = struct.unpack(">4sII", data[132 + 12 * i : 144 + 12 * i])
        body = data[offset : offset + size]
        if signature in _ICC_TAGS and len(body) == size and body[:4] in _ICC_TAGS[signature]:
            exact = _exact_tag(body)
            if exact is not None:
                tags[signature] = exact
    if not all(tag in tags for tag in _ICC_NEEDS[space]):
        return None
    tags[b"desc"] = _mluc(_ICC_DESCRIPTION)
    header = bytearray(128)
    header[8:12] = b"\x04\x30\x00\x00"  # version 4.3: every kept tag type is valid there
    header[12:24] = data[12:24]  # device class, colour space, connection space
    header[36:40] = b"acsp"
    header[64:80] = data[64:80]  # rendering intent, illuminant
    table, bodies = bytearray(struct.pack(">I", len(tags))), bytearray()
    start = 128 + 4 + 12 * len(tags)
    for signature, body in tags.items():
        table += struct.pack(">4sII", signature, start + len(bodies), len(body))
        bodies += body + b"\x00" * (-len(body) % 4)
    profile = header + table + bodies
    profile[0:4] = struct.pack(">I", len(profile))
    return bytes(profile)


def _exact_tag(body: bytes) -> bytes | None:
    """The tag cut to the length its type declares (nothing may hide after it), or None when malformed."""
    kind = body[:4]
    if kind == b"XYZ ":
        size = 20
    elif kind == b"sf32":
        size = 8 + 4 * 9
    elif kind == b"curv" and len(body) >= 12:
        size = 12 + 2 * struct.unpack(">I", body[8:12])[0]
    elif kind == b"para" and len(body) >= 12:
        function = struct.unpack(">H", body[8:10])[0]
        if function not in _PARA_PARAMETERS:
            return None
        size = 12 + 4 * _PARA_PARAMETERS[function]
    else:
        return None
    if len(body) < size:
        return None
    return kind + b"\x00" * 4 + body[8:size]  # the reserved bytes zeroed as well


def _mluc(text: str) -> bytes:
    """A multiLocalizedUnicodeType with one en-US record."""
    encoded = text.encode("utf-16-be")
    return b"mluc" + b"\x00" * 4 + struct.pack(">II2s2sII", 1, 12, b"en", b"US", len(encoded), 28) + encoded
