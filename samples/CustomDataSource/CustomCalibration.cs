using System.Runtime.CompilerServices;

using Quantization;

namespace Quantization.Samples;

/// <summary>
/// The pieces a user writes to calibrate their own model: a data source, an observer, and a forward step. The test
/// project compiles and runs this same file.
/// </summary>
public static class CustomCalibration
{
    /// <summary>Calibrates the toy network on <paramref name="batches"/> batches and returns each activation's parameters.</summary>
    /// <param name="batches">How many batches the source makes.</param>
    /// <param name="cancellationToken">Cancels the run.</param>
    /// <returns>The activation names with their parameters, formatted.</returns>
    public static async Task<IReadOnlyList<(string Name, string Parameters)>> RunAsync(int batches, CancellationToken cancellationToken = default)
    {
        float[] weight = Enumerable.Range(0, 16 * 8).Select(i => MathF.Sin(i) * 0.5f).ToArray();
        Calibrator calibrator = new(name => name == "logits"
            ? new MinMaxObserver(QuantizationScheme.UInt8PerTensorAsymmetric())
            : new PercentileObserver(QuantizationScheme.UInt8PerTensorAsymmetric(), percentile: 99.9));

        await calibrator.RunAsync(new SensorDataSource(batches, seed: 1), (batch, recorder, _) =>
        {
            // The "model": x -> relu(x W); record what the static quantizer needs.
            recorder.Record("input", batch, [batch.Length / 16, 16]);
            float[] hidden = new float[batch.Length / 16 * 8];
            for (int t = 0; t < batch.Length / 16; t++)
            {
                for (int o = 0; o < 8; o++)
                {
                    float sum = 0;
                    for (int i = 0; i < 16; i++)
                    {
                        sum += batch[(t * 16) + i] * weight[(i * 8) + o];
                    }

                    hidden[(t * 8) + o] = Math.Max(sum, 0f);
                }
            }

            recorder.Record("logits", hidden, [batch.Length / 16, 8]);
            return ValueTask.CompletedTask;
        }, cancellationToken: cancellationToken).ConfigureAwait(false);

        return calibrator.ComputeParameters().Select(p => (p.Key, p.Value.ToString())).OrderBy(p => p.Key, StringComparer.Ordinal).ToList();
    }

    /// <summary>A user's data source: readings generated on demand, 4 tokens of 16 features a batch, with rare spikes.</summary>
    private sealed class SensorDataSource(int batches, int seed) : ICalibrationDataSource<float[]>
    {
        public int? Count => batches;

        public async IAsyncEnumerable<float[]> ReadBatchesAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            Random random = new(seed);
            for (int b = 0; b < batches; b++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                yield return Enumerable.Range(0, 64).Select(_ => (float)(random.NextDouble() < 0.001 ? 50 : random.NextDouble() * 2 - 1)).ToArray();
                await Task.Yield();
            }
        }
    }

    /// <summary>
    /// A user's observer: keeps a fixed-size reservoir of values and takes the range between two percentiles, so that
    /// rare spikes do not stretch it. Any <see cref="IQuantizationObserver"/> plugs into the calibrator.
    /// </summary>
    private sealed class PercentileObserver(QuantizationScheme scheme, double percentile) : IQuantizationObserver
    {
        private const int Capacity = 4096;
        private readonly List<float> _reservoir = new(Capacity);
        private readonly Random _random = new(7);

        public QuantizationScheme Scheme => scheme;

        public long ObservedCount { get; private set; }

        public void Observe(ReadOnlySpan<float> values, ReadOnlySpan<int> shape, string? tensorName = null)
        {
            foreach (float value in values)
            {
                ObservedCount++;
                if (_reservoir.Count < Capacity)
                {
                    _reservoir.Add(value);
                }
                else if (_random.NextInt64(ObservedCount) < Capacity)
                {
                    _reservoir[_random.Next(Capacity)] = value;
                }
            }
        }

        public QuantizationParameters ComputeParameters()
        {
            float[] sorted = [.. _reservoir];
            Array.Sort(sorted);
            float low = sorted[(int)((sorted.Length - 1) * (100 - percentile) / 100)];
            float high = sorted[(int)((sorted.Length - 1) * percentile / 100)];
            ScaleAndZeroPoint parameters = scheme.Convention.ComputeParameters(low, high, scheme.QuantMin, scheme.QuantMax, scheme.Symmetric);
            return new QuantizationParameters(parameters.Scale, parameters.ZeroPoint);
        }
    }
}
