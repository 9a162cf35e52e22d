"""c2f.serving: the BentoML HTTP service (``service.py``) and its BentoML-free request checks,
limits and encoders (``validation.py``). Importing this package does not import BentoML."""
