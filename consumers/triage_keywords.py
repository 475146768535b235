"""The triage's keyword tables: weighted lowercase regexes, one table per specialist.

The router side owns them: ``consumers.triage`` scores text against them. They are not the
specialists' rule tables (``consumers/specialists/rules``), which pick what an offline answer
says, so routing never changes when an answer's rules do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Keywords = Sequence[tuple[str, int]]

KEYWORDS: Mapping[str, Keywords] = {
    "backend": (
        (r"\bmicroservices?\b", 2),
        (r"circuit[\s-]*breakers?|bulk[\s-]*heads?", 3),
        (r"\bsagas?\b|distributed\s+transactions?|two[\s-]phase\s+commit", 3),
        (r"\bcqrs\b|event[\s-]*sourc\w*", 3),
        (r"\bredis\b|\bmemcached\b|\bcach\w*", 2),
        (r"\bpostgres\w*|\bmysql\b|\bmongo\w*|\bcassandra\b|\bdatabases?\b", 1),
        (r"connection[\s-]*pool\w*|\bpgbouncer\b|\bhikari\w*", 3),
        (r"\bshard\w*|consistent\s+hashing|\breplication\b", 2),
        (r"\brabbitmq\b|message\s+(?:queues?|brokers?)|dead[\s-]*letter|\bdlq\b|\boutbox\b", 2),
        (r"\bkafka\b", 1),
        (r"api[\s-]*gateway|service\s+mesh|\bistio\b|\blinkerd\b", 2),
        (r"\braft\b|\bconsensus\b|\bcap\s+theorem\b", 3),
        (r"\brps\b|\bqps\b|high[\s-]throughput|horizontal(?:ly)?\s+scal\w*", 1),
        (r"\bkubernetes\b|\bk8s\b|\bhpa\b", 1),
        (r"\bretr(?:y|ies)\b|\bidempotent\s+consumers?\b", 1),
        (r"\bserver[\s-]side\b|\bbackend\b", 1),
    ),
    "api": (
        (r"\bopen\s*api\b|\bswagger\b", 3),
        (r"\bendpoints?\b", 2),
        (r"\brest(?:ful)?\b(?!\s+of\b)", 2),
        (r"\bgraphql\b", 3),
        (r"\bgrpc\b|\bprotobuf\b", 2),
        (r"\bversion(?:ing|ed)?\b|breaking\s+changes?|\bdeprecat\w*", 2),
        (r"paginat\w*|\bcursors?\b", 3),
        (r"idempoten\w*", 2),
        (r"\bwebhooks?\b", 3),
        (r"api\s+design|contract[\s-]first|api\s+contracts?|\bsdks?\b", 3),
        (r"status\s+codes?|problem\s+details|\bhateoas\b|http\s+(?:methods?|verbs?)", 2),
        (r"\bapis?\b", 1),
        (r"rate[\s-]*limit\w*", 1),
    ),
    "data": (
        (r"\betl\b|\belt\b", 3),
        (r"\bwarehouse\w*|\blakehouse\b|data\s+lake", 3),
        (r"data\s+pipelines?", 3),
        (r"\bcdc\b|change[\s-]data[\s-]capture|\bdebezium\b", 3),
        (r"\bdbt\b|\bspark\b|\bpyspark\b|\bflink\b|\bairflow\b|\bdagster\b|\bbeam\b", 3),
        (r"\bsnowflake\b|\bbigquery\b|\bredshift\b|\bdatabricks\b|\bclickhouse\b", 3),
        (r"\biceberg\b|delta\s+lake|\bparquet\b|\bhudi\b", 3),
        (r"data\s+quality|data\s+contracts?|great\s+expectations", 3),
        (r"star\s+schema|dimensional\s+model\w*|fact\s+tables?|\bscd\b", 3),
        (r"schema\s+(?:evolution|registry)|\bavro\b", 2),
        (r"\bbackfill\w*", 2),
        (r"\banalytics?\b|\bbatch\b|\bpipelines?\b|\bingest\w*", 1),
        (r"stream\s+processing|\bwatermarks?\b|\bwindowing\b", 2),
        (r"\bkafka\b", 1),
    ),
    "perf": (
        (r"\bprofil\w*", 3),
        (r"flame\s*graphs?", 3),
        (r"\blatenc\w*", 2),
        (r"\bp9\d(?:\.\d+)?\b|\bp50\b|\bp999\b|tail\s+latency", 2),
        (r"load[\s-]*test\w*|stress[\s-]*test\w*|\bbenchmark\w*|soak\s+test", 3),
        (r"\bk6\b|\bjmeter\b|\bgatling\b|\blocust\b|\bwrk\b", 3),
        (r"\bslow\w*\b|\bbottlenecks?\b|\bspeed\s+up\b|\bfaster\b", 2),
        (r"\bgc\b|garbage[\s-]collect\w*|gc\s+pauses?", 2),
        (r"memory\s+leaks?|\boom\w*\b|out\s+of\s+memory|\bheap\b", 2),
        (r"\bcpu\b|\bthroughput\b|response\s+times?|\bjvm\b", 1),
        (r"capacity\s+plan\w*|\bperformance\b|\boptimi[sz]\w*", 1),
        (r"\bregress\w*|\bspik\w*|\bjump\w*|\bdegrad\w*", 2),
        (r"\b\d+(?:\.\d+)?\s*(?:ms|µs|us)\b", 1),
    ),
    "security": (
        (r"\boauth\w*|\boidc\b|openid|\bsso\b|\bsaml\b|\bpkce\b", 3),
        (r"\bvulnerab\w*|\bcves?\b|\bexploit\w*|\bpen[\s-]?test\w*|penetration", 3),
        (r"threat[\s-]*model\w*|\bstride\b|attack\s+surface", 3),
        (r"\bencrypt\w*|\bdecrypt\w*|\bkms\b|\bhsm\b|key\s+rotation", 2),
        (r"\bcomplian\w*|\bsoc\s*2\b|\bpci\b|\bgdpr\b|\bhipaa\b|iso\s*27001|\baudit\w*", 3),
        (r"\bxss\b|\bcsrf\b|\bssrf\b|sql\s+injection|\binjection\b|\bowasp\b|\basvs\b", 3),
        (r"\bsecrets?\b|\bvault\b|\bcredentials?\b|\bpasswords?\b", 2),
        (r"\bsecur\w*|\bmfa\b|\b2fa\b|\bsbom\b|supply[\s-]chain", 3),
        (r"\bauthenticat\w*|\bauthori[sz]\w*|\brbac\b|\babac\b|least\s+privilege", 2),
        (r"\bjwts?\b|\btls\b|\bmtls\b|\bcertificates?\b", 1),
        (r"\battacks?\b|\battackers?\b|\bbreach\w*|\bmalicious\b", 2),
    ),
}
