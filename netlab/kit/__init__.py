"""The kit's notebooks and report/write-up templates, as package data.

``notebooks`` and ``templates`` here are symlinks to the repository's top-level
``notebooks/`` and ``templates/`` (the source of truth): a checkout or an editable
install reads them in place, and a built wheel carries copies of the files, so
``netlab run`` works from a plain ``pip install``. :func:`netlab.report.run.kit_dir`
finds them.
"""
