namespace Quantization;

public static partial class QuantizationPrimitives
{
    /// <summary>
    /// Folds the min and max of every parameter's elements into <paramref name="mins"/> and <paramref name="maxs"/>
    /// (one per parameter of the layout). Non-finite values throw, or with <see cref="NonFinitePolicy.Skip"/> are left
    /// out and counted. Returns the number left out.
    /// </summary>
    internal static long ObserveRanges(ReadOnlySpan<float> source, in TensorLayout layout, Span<float> mins, Span<float> maxs, NonFinitePolicy policy, string? tensorName, string sourceName)
    {
        RangeVisitor visitor = new(source, mins, maxs, policy, tensorName, sourceName);
        if (layout.ElementCount == 0)
        {
            return 0;
        }

        if (layout.Kind == GranularityKind.PerChannel && layout.Inner == 1)
        {
            // Channels along the last axis: every row is a per-lane run over all parameters; fold rows four at a time.
            for (long row = 0; row < layout.Outer; row += MinMaxRowsPerCall)
            {
                visitor.PerLaneRows((int)row * layout.Channels, (int)Math.Min(MinMaxRowsPerCall, layout.Outer - row), layout.Channels);
            }
        }
        else
        {
            layout.Visit(ref visitor);
        }

        return visitor.Skipped;
    }

    /// <summary>The minimum and maximum of the finite values of a run, and the number of the others (scalar: for runs the kernel flagged).</summary>
    /// <returns>+infinity and -infinity when no value is finite.</returns>
    internal static (float Min, float Max, long Skipped) FiniteMinMax(ReadOnlySpan<float> values)
    {
        float min = float.PositiveInfinity, max = float.NegativeInfinity;
        long skipped = 0;
        foreach (float value in values)
        {
            if (float.IsFinite(value))
            {
                min = MathF.Min(min, value);
                max = MathF.Max(max, value);
            }
            else
            {
                skipped++;
            }
        }

        return (min, max, skipped);
    }

    private ref struct RangeVisitor(ReadOnlySpan<float> source, Span<float> mins, Span<float> maxs, NonFinitePolicy policy, string? tensorName, string sourceName) : IRunVisitor
    {
        private readonly ReadOnlySpan<float> _source = source;
        private readonly Span<float> _mins = mins;
        private readonly Span<float> _maxs = maxs;

        public long Skipped { get; private set; }

        public void Uniform(int start, int length, int parameter)
        {
            ReadOnlySpan<float> run = _source.Slice(start, length);
            if (MinMaxCore(run, out float min, out float max) && HasNonFinite(run, start))
            {
                (min, max, long skipped) = FiniteMinMax(run);
                Skipped += skipped;
            }

            _mins[parameter] = MathF.Min(_mins[parameter], min);
            _maxs[parameter] = MathF.Max(_maxs[parameter], max);
        }

        public void PerLane(int start, int length, int firstParameter) =>
            FoldRows(_source.Slice(start, length), 1, _mins.Slice(firstParameter, length), _maxs.Slice(firstParameter, length), start);

        /// <summary>Folds <paramref name="rowCount"/> consecutive rows that each cover all parameters.</summary>
        public void PerLaneRows(int start, int rowCount, int rowLength) =>
            FoldRows(_source.Slice(start, rowCount * rowLength), rowCount, _mins, _maxs, start);

        private void FoldRows(ReadOnlySpan<float> rows, int rowCount, Span<float> mins, Span<float> maxs, int start)
        {
            int stopped = AccumulateMinMax(rows, rowCount, mins, maxs);
            if (stopped == mins.Length)
            {
                return;
            }

            // A column held NaN or an infinity: throw, or fold in the rest one value at a time, skipping those.
            HasNonFinite(rows, start);
            for (int r = 0; r < rowCount; r++)
            {
                for (int j = stopped; j < mins.Length; j++)
                {
                    float value = rows[(r * mins.Length) + j];
                    if (float.IsFinite(value))
                    {
                        mins[j] = MathF.Min(mins[j], value);
                        maxs[j] = MathF.Max(maxs[j], value);
                    }
                    else
                    {
                        Skipped++;
                    }
                }
            }
        }

        /// <summary>Confirms a kernel's alarm: throws under <see cref="NonFinitePolicy.Throw"/>, else says whether to skip.</summary>
        private readonly bool HasNonFinite(ReadOnlySpan<float> run, int start)
        {
            if (policy == NonFinitePolicy.Throw)
            {
                ThrowIfNonFinite(run, tensorName, sourceName, start);
                return false;
            }

            return IndexOfNonFinite(run) >= 0;
        }
    }
}
