"""A small bilingual Obsidian-like vault made by the tests: Russian and English notes,
a PDF written here (no PDF library needed), and files that must be refused."""

from __future__ import annotations

from pathlib import Path

NOTES = {
    "en/cabin.md": """---
title: Cabin in the woods
tags: [cabin, energy]
created: 2024-05-01
---
# Cabin in the woods

## Solar power
The cabin roof carries four photovoltaic panels that charge a lithium battery bank
through a charge controller. In winter the panels are cleared of snow every morning.

## Water
Water comes from a hand-dug well; a small pump lifts it into a tank in the attic.
""",
    "en/sourdough.md": """# Sourdough bread

The starter is fed with rye flour and water twice a day. Bake at 250 degrees with steam
for twenty minutes, then lower the oven to 220 degrees until the crust is dark.
""",
    "ru/borsch.md": """---
tags: [рецепты]
---
# Рецепты

## Борщ
Бабушкин борщ варится на говяжьем бульоне. Свёклу тушат отдельно с томатной пастой
и уксусом, чтобы она сохранила цвет. Подают со сметаной и чесночными пампушками.
""",
    "ru/elbrus.md": """# Походы

## Эльбрус
Восхождение на Эльбрус с юга заняло восемь дней. Акклиматизационные выходы к скалам
Пастухова обязательны: без акклиматизации горная болезнь почти неизбежна.
""",
}

PDF_LINES = ["Heat pump maintenance manual.",
             "Clean the outdoor coil every spring and replace the air filter.",
             "The refrigerant pressure is checked by a licensed technician."]

BAD_FILES = {"broken.pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog garbage \x00\x01\x02 truncated",
             "binary.md": b"\x7fELF\x02\x01\x01\x00\x00\x00\x00binary renamed to markdown"}


def pdf_bytes(lines: list[str]) -> bytes:
    """A one-page PDF with `lines` in Helvetica, built by hand (valid xref table)."""
    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")

    stream = "BT /F1 12 Tf 72 720 Td 16 TL " + " ".join(f"({esc(line)}) Tj T*" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def make_vault(root: Path) -> Path:
    for name, text in NOTES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (root / "manuals").mkdir(exist_ok=True)
    (root / "manuals" / "heat-pump.pdf").write_bytes(pdf_bytes(PDF_LINES))
    for name, data in BAD_FILES.items():
        (root / name).write_bytes(data)
    return root
