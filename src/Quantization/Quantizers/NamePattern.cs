using System.Text.RegularExpressions;

namespace Quantization;

/// <summary>
/// Matches tensor names: a glob (<c>*</c> any run of characters, <c>?</c> one character, matched against the whole name,
/// as in <c>*.norm.weight</c>), or a regular expression after a <c>re:</c> prefix (searched, as llm-compressor's
/// <c>re:.*lm_head</c>), case-sensitive.
/// </summary>
public sealed class NamePattern
{
    private readonly Regex _regex;

    /// <summary>Initializes a new instance of the <see cref="NamePattern"/> class.</summary>
    /// <param name="pattern">A glob, or <c>re:</c> followed by a regular expression.</param>
    /// <exception cref="ArgumentException">The pattern is empty or not a valid regular expression.</exception>
    public NamePattern(string pattern)
    {
        ArgumentException.ThrowIfNullOrEmpty(pattern);
        Pattern = pattern;
        try
        {
            _regex = pattern.StartsWith("re:", StringComparison.Ordinal)
                ? new Regex(pattern[3..], RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1))
                : new Regex(@"\A" + Regex.Escape(pattern).Replace(@"\*", ".*", StringComparison.Ordinal).Replace(@"\?", ".", StringComparison.Ordinal) + @"\z", RegexOptions.CultureInvariant | RegexOptions.Singleline | RegexOptions.NonBacktracking);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"'{pattern}' is not a valid name pattern: {e.Message}", nameof(pattern), e);
        }
    }

    /// <summary>Gets the pattern as written.</summary>
    public string Pattern { get; }

    /// <summary>Tests a name.</summary>
    /// <param name="name">The tensor name.</param>
    /// <returns>Whether the pattern matches it.</returns>
    /// <exception cref="RegexMatchTimeoutException">A <c>re:</c> pattern took more than a second on this name.</exception>
    public bool IsMatch(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _regex.IsMatch(name);
    }

    /// <inheritdoc/>
    public override string ToString() => Pattern;
}
