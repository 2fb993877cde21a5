"""Old name of ``modules.infotext_utils`` (the WebUI keeps this alias module)."""

from modules.infotext_utils import *  # noqa: F403
from modules.infotext_utils import parse_generation_parameters, quote, unquote  # noqa: F401
