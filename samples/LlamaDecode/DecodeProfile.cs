using System.Diagnostics;
using System.Globalization;

namespace Quantization.Samples;

/// <summary>Where a decoder's time goes: wall-clock ticks summed per part of the forward pass.</summary>
public sealed class DecodeProfile
{
    /// <summary>The parts timed, in the order of a layer.</summary>
    public static readonly string[] Parts = ["norms, RoPE, SiLU, residual", "q/k/v projections", "attention (append + attend)", "o projection", "gate/up projections", "down projection", "lm_head", "embedding"];

    private readonly long[] _ticks = new long[Parts.Length];
    private long _start;

    /// <summary>Adds the time since <paramref name="since"/> to a part and returns the current timestamp.</summary>
    /// <param name="part">The index into <see cref="Parts"/>.</param>
    /// <param name="since">The timestamp the part started.</param>
    /// <returns>The current timestamp, the start of the next part.</returns>
    public long Add(int part, long since)
    {
        long now = Stopwatch.GetTimestamp();
        _ticks[part] += now - since;
        return now;
    }

    /// <summary>Clears the sums and marks the start of the window.</summary>
    public void Reset()
    {
        Array.Clear(_ticks);
        _start = Stopwatch.GetTimestamp();
    }

    /// <summary>Writes each part's share of the time since <see cref="Reset"/>.</summary>
    /// <param name="output">The writer.</param>
    /// <param name="title">The heading.</param>
    public void Write(TextWriter output, string title)
    {
        double total = Stopwatch.GetTimestamp() - _start;
        output.WriteLine(title);
        for (int i = 0; i < Parts.Length; i++)
        {
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {Parts[i],-30} {100 * _ticks[i] / total,5:F1}%"));
        }
    }
}
