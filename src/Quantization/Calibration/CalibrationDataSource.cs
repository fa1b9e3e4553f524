using System.Runtime.CompilerServices;

namespace Quantization;

/// <summary>Built-in calibration data sources.</summary>
public static class CalibrationDataSource
{
    /// <summary>Serves batches held in memory.</summary>
    /// <typeparam name="TBatch">The batch type.</typeparam>
    /// <param name="batches">The batches; a collection's count is used for progress.</param>
    /// <returns>The source.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="batches"/> is <see langword="null"/>.</exception>
    public static ICalibrationDataSource<TBatch> FromBatches<TBatch>(IEnumerable<TBatch> batches)
    {
        ArgumentNullException.ThrowIfNull(batches);
        return new EnumerableSource<TBatch>(batches, batches.TryGetNonEnumeratedCount(out int count) ? count : null);
    }

    /// <summary>Serves batches made on demand by a function, so that none is kept after it is used.</summary>
    /// <typeparam name="TBatch">The batch type.</typeparam>
    /// <param name="count">The number of batches.</param>
    /// <param name="generate">Makes batch i, for i from 0 to <paramref name="count"/> - 1.</param>
    /// <returns>The source.</returns>
    /// <exception cref="ArgumentNullException"><paramref name="generate"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative.</exception>
    public static ICalibrationDataSource<TBatch> FromGenerator<TBatch>(int count, Func<int, TBatch> generate)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentNullException.ThrowIfNull(generate);
        return new EnumerableSource<TBatch>(Enumerable.Range(0, count).Select(generate), count);
    }

    /// <summary>Serves the <c>.npy</c> files of a directory, one file a batch, in ordinal order of their names.</summary>
    /// <param name="directory">The directory.</param>
    /// <returns>The source; each file is read when its batch is requested.</returns>
    /// <exception cref="ArgumentException"><paramref name="directory"/> is empty.</exception>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    public static ICalibrationDataSource<NpyArray> FromNpyDirectory(string directory)
    {
        string[] files = ListFiles(directory, "*.npy");
        return new EnumerableSource<NpyArray>(files.Select(NpyReader.Read), files.Length);
    }

    /// <summary>
    /// Serves the <c>.npz</c> files of a directory (see <see cref="NpzReader"/>), one file a batch of named arrays that keep
    /// their dtypes, in ordinal order of the file names.
    /// </summary>
    /// <param name="directory">The directory.</param>
    /// <returns>The source; each file is read when its batch is requested.</returns>
    /// <exception cref="ArgumentException"><paramref name="directory"/> is empty.</exception>
    /// <exception cref="DirectoryNotFoundException">The directory does not exist.</exception>
    public static ICalibrationDataSource<IReadOnlyDictionary<string, NumPyArray>> FromNpzDirectory(string directory)
    {
        string[] files = ListFiles(directory, "*.npz");
        return new EnumerableSource<IReadOnlyDictionary<string, NumPyArray>>(files.Select(file => NpzReader.Read(file)), files.Length);
    }

    /// <summary>The files of a directory that match a pattern, in ordinal order.</summary>
    private static string[] ListFiles(string directory, string pattern)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        if (!Directory.Exists(directory))
        {
            throw new DirectoryNotFoundException($"The calibration directory '{directory}' does not exist.");
        }

        string[] files = Directory.GetFiles(directory, pattern);
        Array.Sort(files, StringComparer.Ordinal);
        return files;
    }

    private sealed class EnumerableSource<TBatch>(IEnumerable<TBatch> batches, int? count) : ICalibrationDataSource<TBatch>
    {
        public int? Count => count;

        public async IAsyncEnumerable<TBatch> ReadBatchesAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            foreach (TBatch batch in batches)
            {
                cancellationToken.ThrowIfCancellationRequested();
                yield return batch;
                await Task.CompletedTask.ConfigureAwait(ConfigureAwaitOptions.ForceYielding);
            }
        }
    }
}
