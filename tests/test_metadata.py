"""--keep-metadata keeps technical facts (camera, exposure, date, colour profile), never what re-identifies.

Inputs carry what real photo tools write: MWG and Microsoft face regions with a person's name and a face
rectangle, IPTC persons shown, creator and by-line fields, EXIF Artist, owner and serial numbers, a maker
note, GPS. The written file must hold none of it, in every format that can carry metadata.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms
from PIL.PngImagePlugin import PngInfo
from PIL.TiffImagePlugin import IFDRational

from rp_core.files.decode import convert_to_rgb, read_image, read_image_with_metadata
from rp_core.files.encode import write_image
from rp_core.files.metadata import ImageMetadata, clean_icc, filter_xmp, safe_metadata

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
PERSON, PHOTOGRAPHER, SERIAL, OWNER = "Jane Subject", "Pat Photographer", "SN-4471-XY", "Olly Owner"
SECRETS = [PERSON, PHOTOGRAPHER, SERIAL, OWNER, "Chief Reporter", "People|", "0.41"]

XMP = f"""<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:tiff="http://ns.adobe.com/tiff/1.0/"
    xmlns:exif="http://ns.adobe.com/exif/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:photoshop="http://ns.adobe.com/photoshop/1.0/"
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    xmlns:mwg-rs="http://www.metadataworkinggroup.com/schemas/regions/"
    xmlns:stArea="http://ns.adobe.com/xmp/sType/Area#"
    xmlns:MP="http://ns.microsoft.com/photo/1.2/"
    xmlns:MPRI="http://ns.microsoft.com/photo/1.2/t/RegionInfo#"
    xmlns:MPReg="http://ns.microsoft.com/photo/1.2/t/Region#"
    xmlns:lr="http://ns.adobe.com/lightroom/1.0/"
    xmlns:aux="http://ns.adobe.com/exif/1.0/aux/"
    xmp:Rating="4"
    photoshop:AuthorsPosition="Chief Reporter"
    exif:GPSLatitude="52,31.2N"
    aux:SerialNumber="{SERIAL}"
    tiff:Model="XmpCam 9">
   <xmp:CreateDate>2021-06-01T10:00:00</xmp:CreateDate>
   <dc:creator><rdf:Seq><rdf:li>{PHOTOGRAPHER}</rdf:li></rdf:Seq></dc:creator>
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{PERSON} at home</rdf:li></rdf:Alt></dc:description>
   <lr:hierarchicalSubject><rdf:Bag><rdf:li>People|{PERSON}</rdf:li></rdf:Bag></lr:hierarchicalSubject>
   <Iptc4xmpExt:PersonInImage><rdf:Bag><rdf:li>{PERSON}</rdf:li></rdf:Bag></Iptc4xmpExt:PersonInImage>
   <Iptc4xmpExt:PersonInImageWDetails><rdf:Bag><rdf:li rdf:parseType="Resource">
     <Iptc4xmpExt:PersonName><rdf:Alt><rdf:li xml:lang="x-default">{PERSON}</rdf:li></rdf:Alt></Iptc4xmpExt:PersonName>
   </rdf:li></rdf:Bag></Iptc4xmpExt:PersonInImageWDetails>
   <mwg-rs:Regions rdf:parseType="Resource">
    <mwg-rs:RegionList><rdf:Bag><rdf:li rdf:parseType="Resource">
      <mwg-rs:Name>{PERSON}</mwg-rs:Name><mwg-rs:Type>Face</mwg-rs:Type>
      <mwg-rs:Area stArea:x="0.41" stArea:y="0.37" stArea:w="0.12" stArea:h="0.18" stArea:unit="normalized"/>
    </rdf:li></rdf:Bag></mwg-rs:RegionList>
   </mwg-rs:Regions>
   <MP:RegionInfo rdf:parseType="Resource"><MPRI:Regions><rdf:Bag><rdf:li rdf:parseType="Resource">
     <MPReg:PersonDisplayName>{PERSON}</MPReg:PersonDisplayName>
     <MPReg:Rectangle>0.41, 0.37, 0.12, 0.18</MPReg:Rectangle>
   </rdf:li></rdf:Bag></MPRI:Regions></MP:RegionInfo>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"  # Make
    exif[0x0110] = "ModelZ 7"  # Model
    exif[0x013B] = PHOTOGRAPHER  # Artist
    exif[0x8298] = f"(c) {PHOTOGRAPHER}"  # Copyright
    exif[0x010E] = f"{PERSON} at the beach"  # ImageDescription
    exif.get_ifd(EXIF_IFD).update(
        {
            0x829A: IFDRational(1, 250),  # ExposureTime
            0x9003: "2021:06:01 10:00:00",  # DateTimeOriginal
            0xA430: OWNER,  # CameraOwnerName
            0xA431: SERIAL,  # BodySerialNumber
            0xA435: SERIAL,  # LensSerialNumber
            0x927C: f"Nikon\x00FaceRec {PERSON}".encode(),  # MakerNote
            0x9286: f"ASCII\x00\x00\x00{PERSON}".encode(),  # UserComment
            0x9214: (400, 300, 80, 90),  # SubjectArea: where the face is
        }
    )
    exif.get_ifd(GPS_IFD).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)})
    return exif


def _photo() -> Image.Image:
    array = np.zeros((48, 64, 3), np.uint8)
    array[:, :32] = (200, 60, 40)
    array[:, 32:] = (40, 60, 200)
    return Image.fromarray(array)


def _save_source(path: Path) -> None:
    """An input file with everything above, in the way each format stores it."""
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo, exif, ext = _photo(), _exif(), path.suffix
    if ext == ".png":
        info = PngInfo()
        info.add_itxt("XML:com.adobe.xmp", XMP)
        photo.save(path, exif=exif, icc_profile=icc, pnginfo=info)
    elif ext == ".tif":
        tags = Image.Exif()
        tags.load(exif.tobytes())
        tags[700] = XMP.encode()  # XMP
        tags[33723] = _iptc_by_line()  # IPTC-NAA record
        photo.save(path, exif=tags, icc_profile=icc)
    else:
        photo.save(path, exif=exif, icc_profile=icc, xmp=XMP.encode(), quality=95)
        if ext == ".jpg":
            _insert_jpeg_app13(path)


def _iptc_by_line() -> bytes:
    """IPTC IIM records 2:80 (By-line) and 2:25 (Keywords) naming people."""
    records = b""
    for dataset, text in ((80, PHOTOGRAPHER), (25, PERSON)):
        value = text.encode()
        records += b"\x1c\x02" + bytes([dataset]) + struct.pack(">H", len(value)) + value
    return records


def _insert_jpeg_app13(path: Path) -> None:
    """A Photoshop APP13 segment with the IPTC by-line, as news desks' tools write it."""
    iptc = _iptc_by_line()
    block = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(iptc)) + iptc + b"\x00" * (len(iptc) % 2)
    payload = b"Photoshop 3.0\x00" + block
    segment = b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload
    data = path.read_bytes()
    path.write_bytes(data[:2] + segment + data[2:])


def _source(tmp_path: Path, ext: str) -> Path:
    path = tmp_path / f"source{ext}"
    _save_source(path)
    raw = path.read_bytes()
    assert PERSON.encode() in raw and SERIAL.encode() in raw and b"mwg-rs:Regions" in raw  # the test has teeth
    return path


KEEPING = [".jpg", ".png", ".webp", ".tif"]


@pytest.mark.parametrize("out_ext", KEEPING)
@pytest.mark.parametrize("in_ext", KEEPING)
def test_kept_metadata_has_camera_facts_and_nothing_that_identifies(tmp_path: Path, in_ext: str, out_ext: str) -> None:
    array, metadata = read_image_with_metadata(_source(tmp_path, in_ext))
    out = write_image(tmp_path / f"out{out_ext}", array, metadata=metadata, keep_metadata=True)
    raw = out.read_bytes()
    for secret in SECRETS:
        assert secret.encode() not in raw, secret
    for schema in (b"mwg-rs", b"RegionInfo", b"PersonInImage", b"dc:creator", b"AuthorsPosition", b"Iptc4xmp"):
        assert schema not in raw, schema
    with Image.open(out) as written:
        exif = written.getexif()
        assert exif.get(0x0110) is None and exif.get(0x010F) is None  # make and model are free text: dropped
        assert exif.get(0x013B) is None and exif.get(0x8298) is None and exif.get(0x010E) is None
        sub = exif.get_ifd(EXIF_IFD)
        assert sub.get(0x9003) == "2021:06:01 10:00:00" and float(sub.get(0x829A)) == pytest.approx(1 / 250)
        assert not {0xA430, 0xA431, 0xA435, 0x927C, 0x9286, 0x9214} & set(sub)
        assert not exif.get_ifd(GPS_IFD)  # GPS only when asked for
        assert written.info.get("icc_profile")  # the colour profile is kept
        xmp = written.info.get("xmp") or written.info.get("XML:com.adobe.xmp")
        xmp = xmp.encode() if isinstance(xmp, str) else xmp
    # the allowed XMP survives, rebuilt: rating, date; no model (free text), no GPS
    assert xmp is not None and b"xmp:Rating>4<" in xmp and b"2021-06-01T10:00:00" in xmp and b"XmpCam" not in xmp
    assert b"GPS" not in xmp
    assert read_image(out).shape == (48, 64, 3)


@pytest.mark.parametrize("ext", KEEPING)
def test_gps_is_kept_only_when_asked_for(tmp_path: Path, ext: str) -> None:
    array, metadata = read_image_with_metadata(_source(tmp_path, ".jpg"))
    out = write_image(tmp_path / f"gps{ext}", array, metadata=metadata, keep_gps=True)
    with Image.open(out) as written:
        assert written.getexif().get_ifd(GPS_IFD).get(1) == "N"
        xmp = written.info.get("xmp") or written.info.get("XML:com.adobe.xmp")
    assert "52,31.2N" in (xmp.decode() if isinstance(xmp, bytes) else xmp)
    assert PERSON.encode() not in out.read_bytes() and SERIAL.encode() not in out.read_bytes()


def test_metadata_not_kept_means_none_at_all_even_with_hints(tmp_path: Path) -> None:
    array, metadata = read_image_with_metadata(_source(tmp_path, ".jpg"))
    out = write_image(tmp_path / "bare.jpg", array, metadata=metadata, keep_metadata=False)
    with Image.open(out) as written:
        assert len(written.getexif()) == 0
        assert not {"exif", "xmp", "icc_profile", "photoshop", "comment"} & set(written.info)
    assert b"ModelZ" not in out.read_bytes() and b"CameraMaker" not in out.read_bytes()


def test_bmp_output_carries_no_metadata(tmp_path: Path) -> None:
    array, metadata = read_image_with_metadata(_source(tmp_path, ".jpg"))
    raw = write_image(tmp_path / "out.bmp", array, metadata=metadata).read_bytes()
    assert b"ModelZ" not in raw and PERSON.encode() not in raw


def test_metadata_handed_in_directly_is_filtered_at_write_time(tmp_path: Path) -> None:
    """A caller that builds ImageMetadata itself (raw EXIF and XMP) cannot bypass the allow-list."""
    raw = ImageMetadata(exif=_exif().tobytes(), xmp=XMP.encode())
    out = write_image(tmp_path / "direct.png", np.zeros((8, 8, 3), np.uint8), metadata=raw)
    data = out.read_bytes()
    assert all(secret.encode() not in data for secret in SECRETS) and b"ModelZ 7" not in data
    with Image.open(out) as written:
        assert written.getexif().get_ifd(EXIF_IFD).get(0x9003) == "2021:06:01 10:00:00"  # the facts are kept
    assert safe_metadata(raw).exif is not None and PERSON.encode() not in (safe_metadata(raw).xmp or b"")


@pytest.mark.parametrize(
    "bad",
    [
        XMP.replace("</rdf:RDF>", ""),  # does not parse
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]>' + XMP[XMP.index("<x:xmpmeta") :],  # entity tricks
        "plain text, not XML",
    ],
)
def test_xmp_that_cannot_be_parsed_safely_is_dropped_whole(tmp_path: Path, bad: str) -> None:
    assert filter_xmp(bad) is None
    out = write_image(tmp_path / "x.jpg", np.zeros((8, 8, 3), np.uint8), metadata=ImageMetadata(xmp=bad.encode()))
    assert b"xmpmeta" not in out.read_bytes() and b"mwg-rs" not in out.read_bytes()


def test_xmp_that_is_not_utf8_is_dropped() -> None:
    assert filter_xmp(XMP.encode("utf-8")) is not None
    assert filter_xmp(XMP.encode("utf-16")) is None  # legal but rare; a DTD check could not see into it


def test_xmp_with_only_forbidden_fields_becomes_no_xmp() -> None:
    only_people = XMP.replace('xmp:Rating="4"', "").replace('tiff:Model="XmpCam 9"', "")
    only_people = only_people.replace("<xmp:CreateDate>2021-06-01T10:00:00</xmp:CreateDate>", "")
    assert filter_xmp(only_people, keep_gps=False) is None


def test_orientation_is_not_kept_twice(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = _exif()
    exif[0x0112] = 6
    xmp = XMP.replace('tiff:Model="XmpCam 9"', 'tiff:Model="XmpCam 9" tiff:Orientation="6"')
    _photo().save(path, exif=exif, xmp=xmp.encode())
    array, metadata = read_image_with_metadata(path)
    assert array.shape == (64, 48, 3)
    out = write_image(tmp_path / "out.jpg", array, metadata=metadata)
    with Image.open(out) as written:
        assert written.getexif().get(0x0112) is None and b"Orientation" not in written.info["xmp"]


# -- transparency and arrays of any channel count ---------------------------------------------


def test_flattened_transparency_is_reported(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "opaque.png")
    rgba[:4, :, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    array, metadata = read_image_with_metadata(tmp_path / "cutout.png")
    assert metadata.flattened_transparency and (array[:4] == 255).all() and (array[4:] == 0).all()
    assert not read_image_with_metadata(tmp_path / "opaque.png")[1].flattened_transparency
    Image.fromarray(rgba[..., :3]).save(tmp_path / "rgb.png")
    assert not read_image_with_metadata(tmp_path / "rgb.png")[1].flattened_transparency


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 1), (6, 5, 3), (6, 5, 4)])
def test_arrays_of_any_channel_count_are_read_and_written(tmp_path: Path, shape: tuple[int, ...]) -> None:
    array = np.full(shape, 90, np.uint8)
    if len(shape) == 3 and shape[2] == 4:
        array[0, 0, 3] = 0  # one transparent pixel: flattened on white
    rgb, flattened = convert_to_rgb(array)
    assert rgb.shape == (6, 5, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert flattened == (shape == (6, 5, 4)) and (rgb[0, 0] == (255 if flattened else 90)).all()
    assert np.array_equal(read_image(write_image(tmp_path / "a.png", array)), rgb)
    assert np.array_equal(convert_to_rgb(Image.fromarray(array.squeeze()))[0], rgb)


def test_arrays_that_are_not_images_are_refused() -> None:
    with pytest.raises(ValueError, match="uint8"):
        convert_to_rgb(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        convert_to_rgb(np.zeros((4, 4, 2), np.uint8))


# -- JPEG size ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def t1_path() -> Path:
    """InsightFace's t1.jpg file itself (conftest's `t1` fixture is the decoded array)."""
    import importlib.util

    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("insightface (which ships t1.jpg) is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "images" / "t1.jpg"


def _tables(path_or_bytes: Path | bytes) -> dict:
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    with Image.open(source) as image:
        return {k: list(v) for k, v in image.quantization.items()}


def test_a_jpeg_input_is_written_with_its_own_tables_and_about_its_size(tmp_path: Path, t1_path: Path) -> None:
    array, metadata = read_image_with_metadata(t1_path)
    out = write_image(tmp_path / "t1.jpg", array, metadata=metadata, keep_metadata=False)
    size, original = out.stat().st_size, t1_path.stat().st_size
    assert 0.9 * original < size < 1.1 * original  # measured: 128,830 bytes for the 128,824-byte t1.jpg
    assert _tables(out) == _tables(t1_path)
    with Image.open(out) as written, Image.open(t1_path) as source:
        from PIL import JpegImagePlugin

        assert JpegImagePlugin.get_sampling(written) == JpegImagePlugin.get_sampling(source)
    assert np.abs(read_image(out).astype(int) - array).mean() < 0.5  # same tables: recompression barely moves


def test_quality_overrides_the_tables_and_other_inputs_get_quality_95(tmp_path: Path, t1_path: Path) -> None:
    array, metadata = read_image_with_metadata(t1_path)
    q80 = write_image(tmp_path / "q80.jpg", array, metadata=metadata, quality=80)
    reference = io.BytesIO()
    Image.fromarray(array).save(reference, "JPEG", quality=80)
    assert _tables(q80) == _tables(reference.getvalue())
    from_png = write_image(tmp_path / "from_png.jpg", array)  # no JPEG hints: JPEG_QUALITY (95)
    reference = io.BytesIO()
    Image.fromarray(array).save(reference, "JPEG", quality=95)
    assert _tables(from_png) == _tables(reference.getvalue())
    for bad in (0, 101):
        from rp_core.files.formats import UsageError

        with pytest.raises(UsageError, match="quality"):
            write_image(tmp_path / "bad.jpg", array, quality=bad)


def test_greyscale_jpeg_tables_are_reused_for_an_rgb_output(tmp_path: Path) -> None:
    grey = tmp_path / "grey.jpg"
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1))).save(grey, quality=70)
    array, metadata = read_image_with_metadata(grey)
    out = write_image(tmp_path / "out.jpg", array, metadata=metadata)
    assert _tables(out)[0] == _tables(grey)[0]


# -- no free text: a field that can hold a name is never kept ----------------------------------

#: EXIF tags that hold free text (Make, Model, Software, LensMake, LensModel), in IFD0 or the Exif IFD.
FREE_TEXT_EXIF = [(None, 0x010F), (None, 0x0110), (None, 0x0131), (EXIF_IFD, 0xA433), (EXIF_IFD, 0xA434)]
#: XMP properties that hold free text, as an attribute or as an rdf:Alt (UsageTerms is a language alternative).
FREE_TEXT_XMP = [
    ("xmp", "Label"),
    ("xmp", "CreatorTool"),
    ("tiff", "Model"),
    ("tiff", "Make"),
    ("tiff", "Software"),
    ("xmpRights", "UsageTerms"),
    ("xmpRights", "WebStatement"),
    ("exifEX", "LensModel"),
    ("aux", "Lens"),
    ("photoshop", "ICCProfile"),
]
_NAMESPACES = {
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "xmpRights": "http://ns.adobe.com/xap/1.0/rights/",
    "exifEX": "http://cipa.jp/exif/1.0/",
    "aux": "http://ns.adobe.com/exif/1.0/aux/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
}


def _xmp_with(prefix: str, name: str, value: str, as_alt: bool) -> str:
    inner = f'<rdf:Alt><rdf:li xml:lang="x-default">{value}</rdf:li></rdf:Alt>' if as_alt else value
    extra = "" if prefix == "xmp" else f' xmlns:xmp="{_NAMESPACES["xmp"]}"'
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="" xmlns:{prefix}="{_NAMESPACES[prefix]}"{extra}>'
        f"<xmp:CreateDate>2021-06-01T10:00:00</xmp:CreateDate><{prefix}:{name}>{inner}</{prefix}:{name}>"
        "</rdf:Description></rdf:RDF></x:xmpmeta>"
    )


@pytest.mark.parametrize("out_ext", KEEPING)
@pytest.mark.parametrize(("ifd", "tag"), FREE_TEXT_EXIF)
def test_free_text_exif_fields_are_dropped(tmp_path: Path, ifd: int | None, tag: int, out_ext: str) -> None:
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD)[0x829A] = IFDRational(1, 250)  # ExposureTime: a number, kept
    (exif if ifd is None else exif.get_ifd(ifd))[tag] = PERSON
    source = tmp_path / "source.jpg"
    _photo().save(source, exif=exif)
    array, metadata = read_image_with_metadata(source)
    out = write_image(tmp_path / f"out{out_ext}", array, metadata=metadata, keep_metadata=True)
    assert PERSON.encode() not in out.read_bytes()
    with Image.open(out) as written:
        assert float(written.getexif().get_ifd(EXIF_IFD)[0x829A]) == pytest.approx(1 / 250)


@pytest.mark.parametrize("as_alt", [False, True])
@pytest.mark.parametrize(("prefix", "name"), FREE_TEXT_XMP)
def test_free_text_xmp_properties_are_dropped(tmp_path: Path, prefix: str, name: str, as_alt: bool) -> None:
    xmp = _xmp_with(prefix, name, PERSON, as_alt)
    kept = filter_xmp(xmp)
    assert kept is not None and b"2021-06-01T10:00:00" in kept  # the packet is read, the date kept
    assert PERSON.encode() not in kept and f"{prefix}:{name}".encode() not in kept
    out = write_image(tmp_path / "out.jpg", _photo(), metadata=ImageMetadata(xmp=xmp.encode()), keep_metadata=True)
    assert PERSON.encode() not in out.read_bytes()


@pytest.mark.parametrize(
    ("xmp_field", "exif_tag"),
    [("xmp:CreateDate", 0x9003), ("xmp:Rating", 0x9290), ("tiff:DateTime", 0x9010)],
)
def test_a_name_in_a_kept_field_is_dropped_by_its_shape(tmp_path: Path, xmp_field: str, exif_tag: int) -> None:
    """Dates, numbers and offsets are kept only when they look like one: a name put there does not come back."""
    prefix, name = xmp_field.split(":")
    assert filter_xmp(_xmp_with(prefix, name, PERSON, as_alt=False)) is not None
    assert PERSON.encode() not in (filter_xmp(_xmp_with(prefix, name, PERSON, as_alt=False)) or b"")
    exif = Image.Exif()
    exif.get_ifd(EXIF_IFD).update({exif_tag: PERSON, 0x9003 if exif_tag != 0x9003 else 0x9004: "2021:06:01 10:00:00"})
    kept = safe_metadata(ImageMetadata(exif=exif.tobytes()))
    assert kept.exif is not None and PERSON.encode() not in kept.exif and b"2021:06:01 10:00:00" in kept.exif


# -- ICC profiles: kept only rebuilt from what LittleCMS parsed -------------------------------------


def _jpeg_of(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _profile_with_private_tag(payload: bytes) -> bytes:
    """sRGB as LittleCMS writes it, plus a private tag 'priv' holding `payload` (a tag LittleCMS copies raw)."""
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    count = struct.unpack(">I", srgb[128:132])[0]
    tags = [struct.unpack(">4sII", srgb[132 + 12 * i : 144 + 12 * i]) for i in range(count)]
    blobs = [(sig, srgb[offset : offset + size]) for sig, offset, size in tags] + [(b"priv", b"priv\0\0\0\0" + payload)]
    table, body, start = b"", b"", 132 + 12 * len(blobs)
    for sig, blob in blobs:
        table += struct.pack(">4sII", sig, start + len(body), len(blob))
        body += blob + b"\0" * (-len(blob) % 4)
    profile = bytearray(srgb[:128]) + struct.pack(">I", len(blobs)) + table + body
    profile[0:4] = struct.pack(">I", len(profile))
    return bytes(profile)


def test_a_profile_with_a_hidden_photo_keeps_its_colours_and_loses_the_photo(tmp_path: Path, t1: np.ndarray) -> None:
    hidden = _jpeg_of(t1[100:300, 200:400])  # a face of the input, as the original JPEG would carry it
    profile = _profile_with_private_tag(hidden)
    parsed = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    assert hidden in parsed.tobytes()  # LittleCMS alone would carry the photo through: the test can fail
    rebuilt = clean_icc(profile)
    assert rebuilt is not None and hidden[:64] not in rebuilt and b"priv" not in rebuilt
    pixels = Image.fromarray(t1[:64, :64])
    lab = ImageCms.createProfile("LAB")
    before = ImageCms.profileToProfile(pixels, parsed, lab, outputMode="LAB")
    after = ImageCms.profileToProfile(pixels, ImageCms.ImageCmsProfile(io.BytesIO(rebuilt)), lab, outputMode="LAB")
    assert np.array_equal(np.asarray(before), np.asarray(after))  # the same colours

    # through files: an RGBA PNG (its profile is not applied on reading, so the profile itself is kept)
    source = tmp_path / "source.png"
    Image.fromarray(np.dstack([t1[:64, :64], np.full((64, 64), 255, np.uint8)])).save(source, icc_profile=profile)
    array, metadata = read_image_with_metadata(source)
    for ext in KEEPING:
        out = write_image(tmp_path / f"out{ext}", array, metadata=metadata, keep_metadata=True)
        assert hidden[:64] not in out.read_bytes() and b"priv" not in out.read_bytes(), ext
        with Image.open(out) as written:
            assert written.info.get("icc_profile") == rebuilt, ext


@pytest.mark.parametrize("kind", ["a JPEG as the profile", "a profile header before a JPEG"])
def test_a_profile_littlecms_cannot_parse_is_dropped(tmp_path: Path, t1: np.ndarray, kind: str) -> None:
    hidden = _jpeg_of(t1[100:300, 200:400])
    profile = hidden if kind == "a JPEG as the profile" else _profile_with_private_tag(b"")[:128] + hidden
    with pytest.raises(Exception):  # noqa: B017, PT011  (ImageCms raises OSError or PyCMSError by version)
        ImageCms.ImageCmsProfile(io.BytesIO(profile))
    assert clean_icc(profile) is None
    source = tmp_path / "source.jpg"
    Image.fromarray(t1[:64, :64]).save(source, icc_profile=profile)
    array, metadata = read_image_with_metadata(source)
    assert metadata.icc_profile is None
    for ext in KEEPING:
        out = write_image(tmp_path / f"out{ext}", array, metadata=metadata, keep_metadata=True)
        assert hidden[:64] not in out.read_bytes(), ext
        with Image.open(out) as written:
            assert "icc_profile" not in written.info or not written.info["icc_profile"], ext
    direct = write_image(tmp_path / "direct.png", array, metadata=ImageMetadata(icc_profile=profile))
    assert hidden[:64] not in direct.read_bytes()


def test_the_docs_list_exactly_what_is_kept() -> None:
    """docs/cli.md names every field the allow-lists keep (a field added to the code must be documented)."""
    from PIL.ExifTags import GPSTAGS, TAGS

    from rp_core.files import metadata

    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    section = docs[docs.index("### What `--keep-metadata` keeps") : docs.index("Never kept:")]
    names = [TAGS[t] for t in (*metadata._IFD0_KINDS, *metadata._EXIF_IFD_KINDS)]
    names += [GPSTAGS[t] for t in metadata._GPS_KINDS] + list(metadata._XMP_GPS)
    names += [name for _, properties in metadata._XMP_ALLOWED.values() for name in properties]
    missing = [name for name in names if name not in section]
    assert not missing, missing
    never = docs[docs.index("Never kept:") :]
    for dropped in ("xmp:Label", "xmp:CreatorTool", "tiff:Model", "xmpRights:UsageTerms"):
        assert f"`{dropped}`" in never or dropped.split(":")[1] in never
