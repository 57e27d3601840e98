"""Files for the end-to-end test of the original setup against a local hub (test/experiment/pythia-hub.test.ts),
written by the libraries that write the real ones:

  <out>/bias_in_bios/{train,test,dev}.parquet   LabHC/bias_in_bios format, written by datasets.Dataset.to_parquet
      (pyarrow, snappy): hard_text string, profession int64, gender int64 (0 male, 1 female), with the
      dataset card's codes (nurse 13, professor 21; some attorney 2 and surgeon 25 rows the splits must skip).
      The bios are synthetic sentences from templates, seeded.
  <out>/dictionaries_pythia-70m-deduped_10.zip  the Sparse Feature Circuits layout: dictionaries/pythia-70m-deduped/
      <site>/10_32768/ae.pt for embed and attn_out/mlp_out/resid_out of layers 0-5, each the state dict of a
      dictionary_learning AutoEncoder(512, --dict-size) written by torch.save (small dictionaries: the folder
      name keeps the real "10_32768").
"""
import argparse, io, os, random, zipfile
import torch
from dictionary_learning import AutoEncoder

p = argparse.ArgumentParser()
p.add_argument("--out", required=True)
p.add_argument("--dict-size", type=int, default=64)
p.add_argument("--seed", type=int, default=42)
a = p.parse_args()

PROFESSIONS = {"professor": 21, "nurse": 13, "attorney": 2, "surgeon": 25}
# Rows per (profession, gender) per split: professors mostly male, nurses mostly female, as in the data.
SIZES = {
    "train": {("professor", 0): 40, ("professor", 1): 16, ("nurse", 0): 14, ("nurse", 1): 40, ("attorney", 0): 6, ("surgeon", 1): 6},
    "test": {("professor", 0): 14, ("professor", 1): 10, ("nurse", 0): 10, ("nurse", 1): 14, ("attorney", 1): 4},
    "dev": {("professor", 0): 4, ("nurse", 1): 4},
}
NAMES = [["James", "Robert", "Michael", "David", "Thomas", "Daniel"], ["Mary", "Linda", "Susan", "Karen", "Emily", "Laura"]]
PRONOUNS = [("He", "his"), ("She", "her")]
WORK = {
    "professor": ["teaches economics at a state university", "is an associate professor of history", "leads a research group in chemistry"],
    "nurse": ["works as a registered nurse in a children's hospital", "is a nurse practitioner at a family clinic", "cares for patients in intensive care"],
    "attorney": ["practices corporate law in a large firm", "is a trial lawyer who represents small businesses"],
    "surgeon": ["performs cardiac surgery at a teaching hospital", "is an orthopedic surgeon specializing in sports injuries"],
}
EXTRA = ["enjoys hiking with family", "has published several articles", "volunteers at a local shelter", "earned a degree from Ohio State",
         "speaks three languages", "mentors students in the community"]


def bio(rng, profession, gender):
    he, his = PRONOUNS[gender]
    name = rng.choice(NAMES[gender])
    return (f"{name} {rng.choice(WORK[profession])}. {he} {rng.choice(EXTRA)}, and {his} "
            f"{rng.choice(['work', 'research', 'practice', 'career'])} {rng.choice(['spans', 'covers', 'includes'])} "
            f"{rng.randint(3, 30)} years.")


def write_bios():
    from datasets import Dataset, Features, Value
    folder = os.path.join(a.out, "bias_in_bios")
    os.makedirs(folder)
    features = Features({"hard_text": Value("string"), "profession": Value("int64"), "gender": Value("int64")})
    for i, (split, sizes) in enumerate(SIZES.items()):
        rng = random.Random(a.seed + i)
        rows = [(bio(rng, prof, g), PROFESSIONS[prof], g) for (prof, g), n in sizes.items() for _ in range(n)]
        rng.shuffle(rows)
        data = {"hard_text": [r[0] for r in rows], "profession": [r[1] for r in rows], "gender": [r[2] for r in rows]}
        Dataset.from_dict(data, features=features).to_parquet(os.path.join(folder, f"{split}.parquet"))
        print(f"pythia_hub_reference: {split}.parquet, {len(rows)} bios", flush=True)


def write_dictionaries():
    torch.manual_seed(a.seed)
    sites = ["embed"] + [f"{kind}_out_layer{i}" for i in range(6) for kind in ("attn", "mlp", "resid")]
    path = os.path.join(a.out, "dictionaries_pythia-70m-deduped_10.zip")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for site in sites:
            ae = AutoEncoder(512, a.dict_size)
            buf = io.BytesIO()
            torch.save(ae.state_dict(), buf)
            z.writestr(f"dictionaries/pythia-70m-deduped/{site}/10_32768/ae.pt", buf.getvalue())
    print(f"pythia_hub_reference: {len(sites)} dictionaries of {a.dict_size} features in {path}", flush=True)


write_bios()
write_dictionaries()
