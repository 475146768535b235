"""The pipeline's status: each process publishes a report to the status topic (``publisher``);
``view`` assembles every report and the brokers' offsets into one ``PipelineStatus``."""
