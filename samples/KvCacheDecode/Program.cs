// A decode loop that shows how an inference engine plugs in the int8 KV cache: per layer, append the new token's keys
// and values, then attend with its query. Synthetic K/V stand in for a model (no network, no weights); the same loop
// runs on the fp32 cache, and the sample prints memory per token, step time and how far the int8 outputs are from fp32.

using System.Diagnostics;

using Quantization;

const int Layers = 4, KvHeads = 8, QueryHeads = 32, HeadDim = 128;
const int Prompt = 1024, Steps = 128;

KvCacheOptions options = new(Layers, KvHeads, QueryHeads, HeadDim, maxTokens: Prompt + Steps, KvCacheScheme.DynamicPerTokenHead);
Console.WriteLine(FormattableString.Invariant($"Decoder: {Layers} layers, {QueryHeads} query heads sharing {KvHeads} KV heads, head dim {HeadDim}; prompt {Prompt} tokens, then {Steps} decode steps; SIMD tier {QuantizationPrimitives.ActiveSimdTier}"));

// An engine serving many sequences creates one pool per scheme and one cache per sequence; disposing a cache returns
// its blocks to the pool for the next sequence.
KvCacheOptions kiviOptions = new(Layers, KvHeads, QueryHeads, HeadDim, Prompt + Steps, KvCacheScheme.Kivi(groupSize: 32, residentTokens: 128));
KvCacheBlockPool pool = new(options, capacity: 4 * Layers * ((Prompt + Steps + options.BlockTokens - 1) / options.BlockTokens));
using Int8KvCache dynamic = new(options, pool);
using Int8KvCache kivi = new(kiviOptions);
FloatKvCache fp32 = new(options);
SyntheticModel model = new(options, seed: 1);
Decoder[] decoders =
[
    new("fp32", fp32.Append, fp32.Attend, fp32.BytesPerToken, QueryHeads * HeadDim),
    new("int8 dynamic per token", dynamic.Append, dynamic.Attend, dynamic.BytesPerToken, QueryHeads * HeadDim),
    new("int8 KIVI (G 32, R 128)", kivi.Append, kivi.Attend, kivi.BytesPerToken, QueryHeads * HeadDim),
];

// Prefill: the prompt's K/V for every layer, appended as one block.
for (int layer = 0; layer < Layers; layer++)
{
    (float[] keys, float[] values) = model.KeysAndValues(layer, position: 0, tokens: Prompt);
    foreach (Decoder decoder in decoders)
    {
        decoder.Append(layer, keys, values, Prompt);
    }
}

float[] query = new float[QueryHeads * HeadDim];
float[] reference = new float[query.Length];
for (int step = 0; step < Steps; step++)
{
    for (int layer = 0; layer < Layers; layer++)
    {
        // In a real engine these come from the layer's K/V/Q projections of the current token.
        (float[] keys, float[] values) = model.KeysAndValues(layer, Prompt + step, tokens: 1);
        model.Query(layer, Prompt + step, query);
        foreach (Decoder decoder in decoders)
        {
            decoder.Step(layer, keys, values, query, reference);
        }
    }
}

Console.WriteLine();
Console.WriteLine("cache                     bytes/token  vs fp32   decode step (append + attention, all layers)  attention error vs fp32 (RMS)");
foreach (Decoder decoder in decoders)
{
    Console.WriteLine(FormattableString.Invariant(
        $"{decoder.Name,-24} {decoder.BytesPerToken,12:N0}  {decoder.BytesPerToken / fp32.BytesPerToken,6:F3}x   {decoder.Time.Elapsed.TotalMilliseconds / Steps,8:F3} ms ({decoder.Time.Elapsed / decoders[0].Time.Elapsed:F2}x)                     {Math.Sqrt(decoder.SquaredError / decoder.Steps):E1}"));
}

Console.WriteLine(FormattableString.Invariant($"The dynamic cache's pool holds {pool.RentedBlocks} blocks of {pool.BlockBytes / 1024.0:F1} KiB for {dynamic.Count} tokens."));

/// <summary>One cache in the decode loop, timed; the first one (fp32) writes the reference output the others are compared with.</summary>
internal sealed class Decoder(string name, Decoder.AppendStep append, Decoder.AttendStep attend, double bytesPerToken, int outputLength)
{
    private readonly float[] _output = new float[outputLength];

    public delegate void AppendStep(int layer, ReadOnlySpan<float> keys, ReadOnlySpan<float> values, int tokens);

    public delegate void AttendStep(int layer, ReadOnlySpan<float> query, Span<float> output);

    public string Name => name;

    public double BytesPerToken => bytesPerToken;

    public Stopwatch Time { get; } = new();

    public double SquaredError { get; private set; }

    public int Steps { get; private set; }

    public void Append(int layer, float[] keys, float[] values, int tokens) => append(layer, keys, values, tokens);

    public void Step(int layer, float[] keys, float[] values, float[] query, float[] reference)
    {
        Time.Start();
        append(layer, keys, values, 1);
        attend(layer, query, _output);
        Time.Stop();
        if (name == "fp32")
        {
            _output.CopyTo(reference, 0);
        }

        // Relative RMS error of this step's attention output against fp32's.
        double error = 0, norm = 0;
        for (int i = 0; i < reference.Length; i++)
        {
            error += (_output[i] - reference[i]) * (double)(_output[i] - reference[i]);
            norm += reference[i] * (double)reference[i];
        }

        SquaredError += error / norm;
        Steps++;
    }
}

/// <summary>Stands in for a decoder: deterministic K/V/Q per (layer, position), with a few outlier key channels as real models have.</summary>
internal sealed class SyntheticModel(KvCacheOptions options, int seed)
{
    public (float[] Keys, float[] Values) KeysAndValues(int layer, int position, int tokens)
    {
        float[] keys = new float[tokens * options.TokenWidth], values = new float[keys.Length];
        for (int t = 0; t < tokens; t++)
        {
            Random random = new(HashCode.Combine(seed, layer, position + t));
            for (int i = 0; i < options.TokenWidth; i++)
            {
                int channel = i % options.HeadDim;
                keys[(t * options.TokenWidth) + i] = Gaussian(random) * (channel % 16 == 5 ? 6f : 1f);
                values[(t * options.TokenWidth) + i] = Gaussian(random);
            }
        }

        return (keys, values);
    }

    public void Query(int layer, int position, Span<float> query)
    {
        Random random = new(HashCode.Combine(seed, layer, position, "q"));
        for (int i = 0; i < query.Length; i++)
        {
            query[i] = Gaussian(random);
        }
    }

    private static float Gaussian(Random random) =>
        (float)(Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble()));
}
