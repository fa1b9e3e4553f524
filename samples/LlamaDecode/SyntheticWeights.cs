namespace Quantization.Samples;

/// <summary>
/// Random weights of a given shape (normal, std 0.02, as Hugging Face initializes Llama; norm weights 1): each tensor's
/// values follow from its name and a seed, so every build of a model gets the same weights, generated in parallel.
/// </summary>
/// <param name="config">The shape.</param>
/// <param name="seed">The seed.</param>
public sealed class SyntheticWeights(LlamaConfig config, ulong seed = 1) : LlamaWeights
{
    private const int Chunk = 1 << 20;

    /// <inheritdoc/>
    public override LlamaConfig Config => config;

    /// <inheritdoc/>
    public override bool Has(string name) => true;

    /// <inheritdoc/>
    public override float[] ReadFloat(string name, int rows, int columns)
    {
        float[] values = new float[(long)rows * columns];
        if (name.EndsWith("norm.weight", StringComparison.Ordinal))
        {
            Array.Fill(values, 1f);
            return values;
        }

        ulong tensorSeed = seed;
        foreach (char ch in name)
        {
            tensorSeed = (tensorSeed ^ ch) * 0x100000001B3UL; // FNV-1a over the name
        }

        int chunks = (values.Length + Chunk - 1) / Chunk;
        Parallel.For(0, chunks, i =>
        {
            ulong state = tensorSeed + ((ulong)i * 0x9E3779B97F4A7C15UL);
            Span<float> part = values.AsSpan(i * Chunk, Math.Min(Chunk, values.Length - (i * Chunk)));
            for (int j = 0; j < part.Length; j += 2)
            {
                // Box-Muller on two uniforms in (0, 1] from SplitMix64.
                double u1 = ((Next(ref state) >> 11) + 1) * (1.0 / (1UL << 53));
                double u2 = (Next(ref state) >> 11) * (1.0 / (1UL << 53));
                double radius = 0.02 * Math.Sqrt(-2 * Math.Log(u1));
                (double s, double c) = Math.SinCos(2 * Math.PI * u2);
                part[j] = (float)(radius * c);
                if (j + 1 < part.Length)
                {
                    part[j + 1] = (float)(radius * s);
                }
            }
        });
        return values;
    }

    private static ulong Next(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }
}
