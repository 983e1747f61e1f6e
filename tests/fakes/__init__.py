"""In-process fakes of external services for tests (see :mod:`fakes.providers`)."""
