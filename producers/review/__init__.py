"""Batch architecture review, client side: documents in, parts out, findings merged, reports.

The ``switchboard review`` command composes these: ``load_documents`` / ``load_manifest`` find
the inputs, ``split_document`` cuts each into parts that fit a request, the pipeline answers
each part per specialist with a ``FindingsAnswer``, ``merge_findings`` makes one finding of
what several specialists saw, ``compare_with_baseline`` marks new / unchanged / fixed, and
``write_reports`` writes report.md, report.html, report.json and report.sarif.
"""
