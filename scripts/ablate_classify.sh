#!/usr/bin/env bash
# Ablation of ChrNet4 on the validation cells of splits/bioimlab.json:
# straightening (none / Algorithm 1 "hough" / "mask") and loss (CE vs CE + 0.5 x center loss).
# Every variant trains with the same short schedule (EPOCHS), seed and input (CANVAS, REFERENCE:
# the 96x48 canvas of our first runs by default, cheaper than the 112x56 of the default model),
# then is evaluated on the validation cells without and with flip test-time averaging.
# Results: runs/ablation/*.json and a markdown table on stdout.
# Usage: scripts/ablate_classify.sh [EPOCHS]   (data from $KARYO_DATA)
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-12}
CANVAS=${CANVAS:-"96 48"}
REFERENCE=${REFERENCE:-20}
OUT=runs/ablation
mkdir -p "$OUT"
variants=(
  "mask-ce-center mask 0.5"
  "mask-ce mask 0"
  "hough-ce-center hough 0.5"
  "none-ce-center none 0.5"
)
for variant in "${variants[@]}"; do
  read -r name method center <<<"$variant"
  if [ ! -f "$OUT/$name.pt" ]; then
    .venv/bin/karyo train classify --out "$OUT/$name.pt" --epochs "$EPOCHS" --method "$method" \
      --center-weight "$center" --canvas $CANVAS --reference-size "$REFERENCE" --eval-every 100 --resume 2>/dev/null
  fi
  .venv/bin/karyo eval classify --split splits/bioimlab.json --subset val --weights "$OUT/$name.pt" \
    --json "$OUT/$name.json"
  .venv/bin/karyo eval classify --split splits/bioimlab.json --subset val --weights "$OUT/$name.pt" \
    --tta --json "$OUT/$name.tta.json"
done
.venv/bin/python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| variant | straightening | loss | val accuracy | + flip TTA | macro recall | train time |")
print("|---|---|---|---|---|---|---|")
for path in sorted(out.glob("*.tta.json")):
    name = path.name[: -len(".tta.json")]
    plain, tta = json.loads((out / f"{name}.json").read_text()), json.loads(path.read_text())
    meta = json.loads((out / f"{name}.history.json").read_text())
    cfg = meta["train_config"]
    loss = "CE + 0.5 center" if cfg["center_weight"] else "CE"
    print(f"| {name} | {cfg['method']} | {loss} | {plain['accuracy']:.2%} | {tta['accuracy']:.2%} "
          f"| {plain['macro_recall']:.2%} | {meta['train_wall_s'] / 60:.0f} min |")
PY
