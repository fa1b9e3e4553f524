namespace Quantization.Onnx;

/// <summary>Keeps a uniform sample of at most a fixed number of rows (last-axis vectors) of each tensor it sees: reservoir sampling (Vitter's algorithm R) with a fixed seed.</summary>
internal sealed class RowSampler(int capacity) : IActivationRecorder
{
    private const int Seed = 12;
    private readonly Dictionary<string, Reservoir> _reservoirs = new(StringComparer.Ordinal);

    public void Record(string name, ReadOnlySpan<float> values, ReadOnlySpan<int> shape)
    {
        int channels = shape.IsEmpty ? 1 : shape[^1];
        if (channels == 0)
        {
            return;
        }

        if (!_reservoirs.TryGetValue(name, out Reservoir? reservoir))
        {
            reservoir = _reservoirs[name] = new Reservoir(new float[(long)capacity * channels <= Array.MaxLength ? capacity * channels : throw new ArgumentException($"Tensor '{name}' has {channels} channels; SearchRows of them do not fit in an array.", nameof(shape))], channels, new Random(Seed));
        }

        if (reservoir.Channels != channels)
        {
            throw new ArgumentException(FormattableString.Invariant($"Tensor '{name}' has {channels} channels, not {reservoir.Channels} as before."), nameof(shape));
        }

        for (int r = 0; r < values.Length / channels; r++)
        {
            long slot = reservoir.Seen < capacity ? reservoir.Seen : reservoir.Random.NextInt64(reservoir.Seen + 1);
            if (slot < capacity)
            {
                values.Slice(r * channels, channels).CopyTo(reservoir.Rows.AsSpan((int)slot * channels, channels));
            }

            reservoir.Seen++;
        }
    }

    /// <summary>The sampled rows of a tensor ([count, C], row-major, in the first count rows) and their count, or <see langword="null"/> when it was not seen.</summary>
    public (float[] Rows, int Count)? Sample(string name) =>
        _reservoirs.TryGetValue(name, out Reservoir? reservoir) ? (reservoir.Rows, (int)Math.Min(reservoir.Seen, capacity)) : null;

    private sealed class Reservoir(float[] rows, int channels, Random random)
    {
        public float[] Rows => rows;

        public int Channels => channels;

        public Random Random => random;

        public long Seen { get; set; }
    }
}
