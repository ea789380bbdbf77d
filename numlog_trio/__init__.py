"""numlog-trio: a Trio TCP server that logs each distinct 9-digit number once.

The public names are re-exported here; the modules behind them are private.
"""

from ._dedup import SeenNumbers as SeenNumbers
from ._errors import ListenError as ListenError
from ._errors import LogOpenError as LogOpenError
from ._errors import LogResumeError as LogResumeError
from ._errors import LogWriteError as LogWriteError
from ._errors import MemoryOutError as MemoryOutError
from ._errors import ServiceError as ServiceError
from ._framing import Framed as Framed
from ._framing import LineFramer as LineFramer
from ._framing import Outcome as Outcome
from ._logfile import Loaded as Loaded
from ._logfile import LogFile as LogFile
from ._report import Totals as Totals
from ._report import format_report as format_report
from ._report import report_periodically as report_periodically
from ._server import ServerConfig as ServerConfig
from ._server import serve as serve
from ._writer import LogWriter as LogWriter
