"""Layer 0, the ground floor: what every other layer may use and nothing here imports from above.

The error classes (:mod:`.errors`), atomic file writes and output-path guards (:mod:`.atomic`),
the one safetensors dtype table and ``--dtype`` parser (:mod:`.dtypes`), the one device parser
(:mod:`.device`), the one progress adapter (:mod:`.progress`), the JSON view of report values
(:mod:`.jsonable`), a file's fingerprint for change detection (:mod:`.fingerprint`), PEFT's file and key names (:mod:`.peft_names`) and the package version. No
torch model code and no file formats live here.
"""
