"""c2f.serving: the BentoML HTTP service (``service.py``) and its BentoML-free parts: settings
(``settings.py``), request options and limits (``options.py``), response encoders (``encoders.py``),
ASGI middlewares (``middleware.py``) and the ``c2f serve`` supervisor (``process.py``). Importing
this package does not import BentoML."""
