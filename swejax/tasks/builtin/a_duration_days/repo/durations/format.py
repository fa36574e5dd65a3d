from .units import ORDER, UNIT_SECONDS


def format_duration(seconds):
    """Format a number of seconds using the largest units first."""
    seconds = int(seconds)
    if seconds < 0:
        raise ValueError("negative duration")
    if seconds == 0:
        return "0s"
    parts = []
    for unit in ORDER:
        count, seconds = divmod(seconds, UNIT_SECONDS[unit])
        if count:
            parts.append("%d%s" % (count, unit))
    return "".join(parts)
