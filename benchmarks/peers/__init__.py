"""The same route-and-respond pipeline in Quix Streams, FastStream and Faust (G10).

Each peer has two stages, like Switchboard's router and worker processes: ``router`` reads
requests, decodes the Avro, routes by the ``/command`` to ``tasks.<specialist>``; ``worker``
reads the task topics and answers at once on the response topic. They share ``logic`` (the
same fastavro single-object codec and command parser Switchboard uses), so the comparison is
of the frameworks, not of the codec. Each is written the way its own documentation shows.
"""
