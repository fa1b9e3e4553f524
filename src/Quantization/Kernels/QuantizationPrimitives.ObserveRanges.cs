using System.Numerics.Tensors;

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
        layout.Visit(ref visitor);
        return visitor.Skipped;
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
                (min, max) = (float.PositiveInfinity, float.NegativeInfinity);
                foreach (float value in run)
                {
                    if (float.IsFinite(value))
                    {
                        min = MathF.Min(min, value);
                        max = MathF.Max(max, value);
                    }
                    else
                    {
                        Skipped++;
                    }
                }
            }

            _mins[parameter] = MathF.Min(_mins[parameter], min);
            _maxs[parameter] = MathF.Max(_maxs[parameter], max);
        }

        public void PerLane(int start, int length, int firstParameter)
        {
            ReadOnlySpan<float> run = _source.Slice(start, length);
            Span<float> mins = _mins.Slice(firstParameter, length);
            Span<float> maxs = _maxs.Slice(firstParameter, length);
            if (MinMaxCore(run, out _, out _) && HasNonFinite(run, start))
            {
                for (int j = 0; j < run.Length; j++)
                {
                    if (float.IsFinite(run[j]))
                    {
                        mins[j] = MathF.Min(mins[j], run[j]);
                        maxs[j] = MathF.Max(maxs[j], run[j]);
                    }
                    else
                    {
                        Skipped++;
                    }
                }

                return;
            }

            TensorPrimitives.Min(mins, run, mins);
            TensorPrimitives.Max(maxs, run, maxs);
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
