"""Reports rendered from result data: PR bodies, sticky comments, job summaries, JSON and plots."""
